"""Crowd jobs under crashes, HTTP faults, spammers and disagreement (emulator + toloka-kit)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.crowdwork.store import DbStore  # noqa: E402
from backend.db import get_sessionmaker, session_scope  # noqa: E402
from backend.decisions.models import DecisionEvent  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from crowd.emulator import Emulator, Fault, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import crowd_runtime, seed_queue  # noqa: E402


class Crash(Exception):
    pass


class CrashAfterPoolCreated(DbStore):
    """Records like `DbStore`, then dies right after the pool exists on Toloka."""

    def put(self, key: str, value: dict) -> None:
        super().put(key, value)
        if key.startswith("pool:") and value.get("pool_id_phase") == "created":
            raise Crash("killed between 'pool created' and 'tasks uploaded'")


def _run(rt, emu, pool_id: int, rounds: int = 8):
    for _ in range(rounds):
        with session_scope() as s:
            emu.work(s.get(CrowdPool, pool_id).toloka_pool_id)
        last = pull_pool(rt=rt, pool_id=pool_id)
        if last.state == "closed":
            return last
    return last


def test_crash_after_pool_created_resumes_without_duplicates(settings, policy):
    queue, truth = seed_queue(settings, policy, n=10, n_golden=4)
    crowd = CrowdSettings(tasks_per_suite=3)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with Emulator(seed=1, workers=8, truth=truth) as emu:
        crashing = crowd_runtime(settings, crowd, policy, emu.url,
                                 store=CrashAfterPoolCreated(sessions))
        with pytest.raises(Crash):
            push_queue(rt=crashing, queue_name=queue)
        assert len(emu.state.pools) == 1 and not emu.state.tasks
        with session_scope() as s:
            pool = s.scalar(select(CrowdPool))
            assert pool.state == "intent" and pool.toloka_pool_id is None
        with pytest.raises(Exception, match="never fully pushed"):
            pull_pool(rt=crashing, pool_id=pool.id)
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        again = push_queue(rt=rt, queue_name=queue)
        assert again.resumed and again.pool_id == pool.id
        assert (again.created, again.reused) == (14, 0)
        third = push_queue(rt=rt, queue_name=queue)  # a plain retry: nothing new anywhere
        assert third.already_open and third.pool_id == pool.id
        assert len(emu.state.pools) == 1 and len(emu.state.projects) == 1
        assert len(emu.state.tasks) == 14
        last = _run(rt, emu, pool.id)
    assert last.state == "closed"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(CrowdPool)) == 1
        cts = s.scalars(select(CrowdTask)).all()
        assert len(cts) == 14 and all(ct.toloka_task_id for ct in cts)
        assert len({ct.toloka_task_id for ct in cts}) == 14


def test_pull_survives_5xx_and_timeouts_without_duplicate_or_lost_answers(settings, policy):
    queue, truth = seed_queue(settings, policy, n=16, n_golden=4)
    crowd = CrowdSettings(tasks_per_suite=4, overlap=2)
    faults = [Fault("GET /api/v1/assignments", "timeout", nth=2, seconds=1.0),
              Fault("GET /api/v1/assignments", "503", nth=4),
              Fault("PATCH /api/v1/assignments/{id}", "timeout", nth=3, seconds=1.0)]
    with Emulator(seed=5, workers=8, truth=truth, fault_rate=0.2, faults=faults) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url, retries=8, timeout=0.5)
        pushed = push_queue(rt=rt, queue_name=queue)
        last = _run(rt, emu, pushed.pool_id)
        # the cursor lost: a full re-read adds nothing
        with session_scope() as s:
            s.get(CrowdPool, pushed.pool_id).last_assignment_id = None
            s.get(CrowdPool, pushed.pool_id).state = "open"
        again = pull_pool(rt=rt, pool_id=pushed.pool_id)
        answered = {(a["id"], t["input_values"]["item_id"])
                    for a in emu.state.assignments.values() for t in a["tasks"]}
        assert 500 in emu.calls("GET /api/v1/assignments") + emu.calls("GET /api/v1/pools/{id}") \
            or 503 in emu.calls("GET /api/v1/assignments")
    assert last.state == "closed" and again.judgments_added == 0
    with session_scope() as s:
        got = s.execute(select(Judgment.assignment_id, Judgment.item_id)).all()
    assert len(got) == len(set(got)) == len(answered)
    assert {(a, str(i)) for a, i in got} == answered


def test_spammer_is_banned_by_golden_accuracy(settings, policy):
    queue, truth = seed_queue(settings, policy, n=20, n_golden=8)
    crowd = CrowdSettings(tasks_per_suite=2, golden_per_suite=1, overlap=2, min_answers=2,
                          target_confidence=0.6, aggregation="mv")
    workers = [SimWorker(f"h{i}", accuracy=1.0, seconds_per_task=10.0) for i in range(5)]
    workers.insert(0, SimWorker("spam", kind="constant", seconds_per_task=10.0))
    with Emulator(seed=2, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        last = _run(rt, emu, pushed.pool_id)
        restricted = {r["user_id"] for r in emu.state.restrictions.values()}
    assert last.state == "closed"
    assert restricted == {"spam"}
    with session_scope() as s:
        pool = s.get(CrowdPool, pushed.pool_id)
        statuses = set(s.scalars(select(Judgment.assignment_status)
                                 .where(Judgment.worker_id == "spam")))
        events = s.scalars(select(DecisionEvent).where(DecisionEvent.source == "crowd")).all()
    assert pool.config["banned"] == ["spam"]
    assert "REJECTED" in statuses
    assert all(a["worker"] != "spam" for e in events for a in e.details["answers"])
    assert events and all(e.label == truth[str(e.item_id)] for e in events)


def test_ties_never_decide_and_go_to_moderators_at_max_overlap(settings, policy):
    queue, truth = seed_queue(settings, policy, n=12, n_golden=0)
    # mv states two agreeing answers as (2 + 1/K) / 3 (0.75 for four labels), a tie 0.5
    crowd = CrowdSettings(overlap=2, min_answers=2, max_overlap=2, golden_per_suite=0,
                          tasks_per_suite=4, aggregation="mv", target_confidence=0.7)
    workers = [SimWorker("honest", accuracy=1.0, seconds_per_task=10.0),
               SimWorker("always-ok", kind="constant", seconds_per_task=10.0)]
    with Emulator(seed=4, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        last = _run(rt, emu, pushed.pool_id)
    assert last.state == "closed"
    is_ok = {int(k) for k, v in truth.items() if v == "ok"}
    with session_scope() as s:
        decided = set(s.scalars(select(DecisionEvent.item_id)
                                .where(DecisionEvent.source == "crowd")))
        disagree = s.execute(select(Task.item_id, Task.state, Task.payload, Queue.audience)
                             .join(Queue).where(Queue.kind == "CROWD_DISAGREE")).all()
        crowd_done = s.scalar(select(func.count()).select_from(Task).join(Queue).where(
            Queue.name == queue, Task.state == "done"))
        outcomes = dict(s.execute(select(CrowdTask.item_id, CrowdTask.outcome)).tuples().all())
    tied = {i for i in outcomes if i not in is_ok}
    assert tied and decided == set(outcomes) - tied
    assert {row.item_id for row in disagree} == tied
    assert {(row.state, row.audience) for row in disagree} == {("pending", "moderators")}
    assert all(row.payload["reason"] == "no agreement at 2 answers (tie)" for row in disagree)
    assert crowd_done == 12 and {outcomes[i] for i in tied} == {"moderators"}


def test_cli_push_on_a_missing_queue_exits_3(settings, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    env = {"QUORUM_DATABASE_URL": settings.resolved_database_url,
           "QUORUM_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false"}
    r = subprocess.run([sys.executable, "-m", "backend.cli", "crowd", "push",
                        "NOPE_2026-01-01"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == "error: no queue named 'NOPE_2026-01-01'"
    r = subprocess.run([sys.executable, "-m", "backend.cli", "crowd", "pull", "--pool", "99"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3 and "no crowd pool with id 99" in r.stderr
