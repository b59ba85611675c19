"""The golden set's life cycle (issue #13, #9): control tasks rotate from pool to pool,
retire once shown ``golden_max_exposures`` times, are replenished from verdicts two humans
agree on, and the crowd report shows the coverage."""

from __future__ import annotations

import io
import warnings

from rich.console import Console
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.cli import print_gold  # noqa: E402
from backend.crowdwork.models import CrowdTask, GoldenItem, Judgment  # noqa: E402
from backend.crowdwork.report import crowd_report  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from backend.items.models import Item  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.queues import service as queues  # noqa: E402
from backend.queues.work import submit_verdict  # noqa: E402
from backend.users.models import User  # noqa: E402
from backend.users.service import create_user  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime, seed_queue  # noqa: E402
from tests.conftest import item_row  # noqa: E402


def _crowd(**over) -> CrowdSettings:  # noqa: ANN003
    base = dict(overlap=3, min_answers=3, max_overlap=3, target_confidence=0.6,
                tasks_per_suite=4, golden_per_suite=1, aggregation="mv",
                golden_rate=0.0, golden_min=5, golden_max=5, golden_max_exposures=0)
    return CrowdSettings(**{**base, **over})


def _run_pool(rt, emu, queue: str) -> tuple[int, set[int]]:  # noqa: ANN001
    """Push ``queue``, work it to the end; (pool id, its control items)."""
    pushed = push_queue(rt=rt, queue_name=queue)
    for _ in range(8):
        emu.work(pushed.toloka_pool_id)
        if pull_pool(rt=rt, pool_id=pushed.pool_id).state == "closed":
            break
    with session_scope() as s:
        control = set(s.scalars(select(CrowdTask.item_id).where(
            CrowdTask.pool_id == pushed.pool_id, CrowdTask.is_golden.is_(True))))
    return pushed.pool_id, control


def _control_answers(pool_id: int | None = None) -> dict[int, tuple[int, int]]:
    """Per golden item: crowd control answers and distinct workers, from the judgments."""
    with session_scope() as s:
        workers = func.count(func.distinct(Judgment.worker_id))
        stmt = (select(Judgment.item_id, func.count(), workers)
                .where(Judgment.worker_kind == "crowd", Judgment.is_golden.is_(True))
                .group_by(Judgment.item_id))
        if pool_id is not None:
            stmt = stmt.where(Judgment.crowd_pool_id == pool_id)
        return {i: (n, w) for i, n, w in s.execute(stmt)}


def _workers(n: int = 6) -> list[SimWorker]:
    return [SimWorker(f"w{i}", accuracy=0.97, seconds_per_task=10.0) for i in range(n)]


def test_control_tasks_rotate_between_pools_and_the_report_shows_exposures(settings, policy):
    """Two pools in a row take different golden items (the least shown first), not the
    same oldest five; the report states each item's exposures and the workers who saw it."""
    queue, truth = seed_queue(settings, policy, n=12, n_golden=10)
    with Emulator(seed=3, workers=_workers(), truth=truth) as emu:
        rt = crowd_runtime(settings, _crowd(), policy, emu.url)
        first, gold1 = _run_pool(rt, emu, queue)
        shown1 = set(_control_answers())
        queue2, truth2 = seed_queue(settings, policy, n=12, n_golden=0, start=500)
        emu.simulator.truth.update(truth2)
        _, gold2 = _run_pool(rt, emu, queue2)
    assert len(gold1) == len(gold2) == 5 and shown1 <= gold1
    # the second pool takes none that the first showed: the never shown come first
    assert shown1 and not gold2 & shown1
    seen = _control_answers()
    assert len(seen) > len(shown1)  # more of the set was shown than one pool shows
    with session_scope() as s:
        g = crowd_report(session=s, exposure_cap=0)["gold"]
    assert (g["active"], g["retired"], g["never_shown"]) == (10, 0, 10 - len(seen))
    assert g["by_source"] == {"ingest": 10}
    assert {r["item_id"]: (r["exposures"], r["workers"], r["pools"]) for r in g["items"]
            if r["exposures"]} == {i: (n, w, 1) for i, (n, w) in seen.items()}
    assert g["control_answers"] == sum(n for n, _ in seen.values())
    out = io.StringIO()
    print_gold(g, Console(file=out, width=160))
    assert "Golden set: 10 active" in out.getvalue() and "0 retired" in out.getvalue()


def test_a_golden_item_shown_too_often_retires_and_leaves_the_rotation(settings, policy):
    """With an exposure cap, the control tasks that reached it retire when the pool's
    answers are pulled; the next pool never takes them, and the report says so."""
    queue, truth = seed_queue(settings, policy, n=24, n_golden=6)
    crowd = _crowd(golden_max_exposures=3)
    with Emulator(seed=3, workers=_workers(), truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        first, gold1 = _run_pool(rt, emu, queue)
        seen = _control_answers(first)
        over = {i for i, (n, _) in seen.items() if n >= 3}
        assert over, seen  # 24 items × 3 answers in suites of 4: ~18 control answers on 5
        with session_scope() as s:
            retired = {g.item_id: g for g in s.scalars(select(GoldenItem))}
        assert set(retired) == over
        assert all(g.state == "retired" and g.exposures == seen[i][0]
                   and "exposure cap of 3" in g.reason for i, g in retired.items())
        queue2, truth2 = seed_queue(settings, policy, n=12, n_golden=0, start=500)
        emu.simulator.truth.update(truth2)
        _, gold2 = _run_pool(rt, emu, queue2)
    assert gold2 and not gold2 & over
    with session_scope() as s:
        g = crowd_report(session=s, exposure_cap=3)["gold"]
    states = {r["item_id"]: r["state"] for r in g["items"]}
    assert {i for i, st in states.items() if st == "retired"} >= over
    assert g["retired"] == sum(st == "retired" for st in states.values())
    assert g["active"] == 6 - g["retired"]


KINDS = ["MANUAL", "SIMILAR_CONFLICT"]


def _moderator_verdict(settings, policy, *, item_id: int, user: str, label: str,  # noqa: ANN001
                       kind: str = "MANUAL") -> None:
    """``user`` (a moderator) decides ``item_id`` through a task of a ``kind`` queue."""
    now = utcnow()
    with session_scope() as s:
        queues.enqueue(session=s, kind=kind, item_ids=[item_id], now=now, settings=settings)
        u = s.scalar(select(User).where(User.username == user))
        if u is None:
            u = create_user(session=s, username=user, role="moderator", queue_kinds=KINDS)
    with session_scope() as s:
        u = s.scalar(select(User).where(User.username == user))
        task = queues.lease_next(session=s, user=u, now=now, settings=settings)
        assert task is not None and task.item_id == item_id
        submit_verdict(session=s, task_id=task.id, user=u, label=label, policy=policy, now=now)


def test_replenished_from_verdicts_two_humans_agree_on(settings, policy):
    """Items a moderator decided where the crowd's majority agreed, or two moderators
    decided the same way, become golden items (with their source) when a push finds the
    set under ``golden_target``; a moderator overruling the crowd, or two moderators who
    disagree, do not. The new golden items are the next pool's control tasks."""
    queue, truth = seed_queue(settings, policy, n=8, n_golden=5)
    with Emulator(seed=3, workers=_workers(), truth=truth) as emu:
        rt = crowd_runtime(settings, _crowd(), policy, emu.url)
        first, _ = _run_pool(rt, emu, queue)
        with session_scope() as s:
            crowd_said: dict[int, set[str]] = {}
            for i, lab in s.execute(select(Judgment.item_id, Judgment.label).where(
                    Judgment.crowd_pool_id == first, Judgment.is_golden.is_(False))):
                crowd_said.setdefault(i, set()).add(lab)
            rows = [item_row(900 + i, external_id=f"M{i}") for i in range(2)]
            _, (both, split) = ingest(session=s, rows=rows, policy=policy, now=utcnow())
        # the crowd was unanimous on both (3 answers each)
        agree, overrule = sorted(i for i, labs in crowd_said.items() if len(labs) == 1)[:2]
        _moderator_verdict(settings, policy, item_id=agree, user="a", label=truth[str(agree)])
        other = next(lab for lab in LABELS if lab != truth[str(overrule)])
        _moderator_verdict(settings, policy, item_id=overrule, user="a", label=other)
        _moderator_verdict(settings, policy, item_id=both, user="a", label="adult")
        _moderator_verdict(settings, policy, item_id=both, user="b", label="adult",
                           kind="SIMILAR_CONFLICT")
        _moderator_verdict(settings, policy, item_id=split, user="a", label="ok")
        _moderator_verdict(settings, policy, item_id=split, user="b", label="restricted",
                           kind="SIMILAR_CONFLICT")
        queue2, truth2 = seed_queue(settings, policy, n=8, n_golden=0, start=500)
        emu.simulator.truth.update(truth2)
        rt.crowd = _crowd(golden_target=20, golden_min=7, golden_max=7)
        second, gold2 = _run_pool(rt, emu, queue2)
    with session_scope() as s:
        promoted = {g.item_id: (g.source, g.label, g.state) for g in s.scalars(
            select(GoldenItem))}
        items = {i.id: (i.is_golden, i.golden_label) for i in s.scalars(
            select(Item).where(Item.id.in_([agree, overrule, both, split])))}
        g = crowd_report(session=s, exposure_cap=0)["gold"]
    assert promoted == {agree: ("moderator_crowd", truth[str(agree)], "active"),
                        both: ("two_moderators", "adult", "active")}
    assert items[agree] == (True, truth[str(agree)]) and items[both] == (True, "adult")
    assert not items[overrule][0] and not items[split][0]
    assert {agree, both} <= gold2  # the new golden items are control tasks at once
    assert g["by_source"] == {"ingest": 5, "moderator_crowd": 1, "two_moderators": 1}
    assert g["active"] == 7
