"""Pair pools: the pair queue pushed to the crowd through the real toloka-kit client against
the local emulator → judgments ``same`` / ``different`` on the pair tasks (never decisions)
→ the similarity calibration proposes a reuse distance from crowd answers alone."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.calibration import service as calibration  # noqa: E402
from backend.calibration.settings import CalibrationSettings  # noqa: E402
from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from backend.decisions.models import DecisionEvent  # noqa: E402
from backend.errors import ValidationFailed  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.queues import service as queues  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime  # noqa: E402
from tests.conftest import item_row  # noqa: E402

CAL = CalibrationSettings(pair_audience="crowd", pair_overlap=3, reuse_target_precision=0.8)


def seed_pair_queue(settings, policy, *, n_same: int, n_diff: int, n_golden: int = 24,
                    cal: CalibrationSettings = CAL) -> tuple[str, dict[str, str], list[int]]:
    """Pair tasks in today's pair queue: ``n_same`` pairs of items with the same true label
    at distances 0.01, 0.02, … and ``n_diff`` of different labels from 0.2 on, plus golden
    items for the control pairs. Returns the queue name, the true label of every item by
    id (what simulated workers know) and the pair task ids."""
    n = n_same + n_diff
    rows = [item_row(i, external_id=f"P{i}") for i in range(2 * n)]
    rows += [item_row(10_000 + i, external_id=f"G{i}", golden_label=LABELS[i % len(LABELS)])
             for i in range(n_golden)]
    with session_scope() as s:
        _, ids = ingest(session=s, rows=rows, policy=policy, now=utcnow())
        anchors, others = ids[:n], ids[n:2 * n]
        truth = {str(i): LABELS[k % len(LABELS)] for k, i in enumerate(anchors)}
        truth |= {str(b): truth[str(a)] if k < n_same else
                  LABELS[(LABELS.index(truth[str(a)]) + 1) % len(LABELS)]
                  for k, (a, b) in enumerate(zip(anchors, others, strict=True))}
        truth |= {str(i): LABELS[k % len(LABELS)] for k, i in enumerate(ids[2 * n:])}
        dist = [0.01 * (k + 1) for k in range(n_same)] + [0.2 + 0.01 * k for k in range(n_diff)]
        tasks = calibration.enqueue_pairs(session=s, now=utcnow(), settings=settings, cal=cal,
                                          pairs=list(zip(anchors, others, dist, strict=True)))
        name = s.scalar(select(Queue.name).where(Queue.kind == cal.pair_queue_kind))
    return name, truth, tasks


def _work(rt, emu, pool_id: int, rounds: int = 8) -> list:
    out = []
    for _ in range(rounds):
        with session_scope() as s:
            emu.work(s.get(CrowdPool, pool_id).toloka_pool_id)
        out.append(pull_pool(rt=rt, pool_id=pool_id))
        if out[-1].state == "closed":
            break
    return out


def _pair_judgments(s, tasks: list[int]) -> list[Judgment]:
    return list(s.scalars(select(Judgment).where(Judgment.task_id.in_(tasks))))


def test_pair_queue_pushed_answered_by_the_crowd_and_calibrated(settings, policy):
    queue, truth, tasks = seed_pair_queue(settings, policy, n_same=14, n_diff=6)
    crowd = CrowdSettings(tasks_per_suite=2, golden_per_suite=1,
                          pool_config={"golden_min_accuracy": 0.7})
    workers = [SimWorker(f"h{i}", accuracy=0.97, seconds_per_task=10.0) for i in range(6)]
    # slow enough for the fast-answer rule: only the control pairs can catch it
    workers.insert(0, SimWorker("yes-man", kind="constant", seconds_per_task=10.0))
    with Emulator(seed=4, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        rt.cal = CAL
        pushed = push_queue(rt=rt, queue_name=queue)
        assert (pushed.kind, pushed.items, pushed.golden, pushed.created) == ("pair", 20, 10, 30)
        with session_scope() as s:
            states = dict(s.execute(select(Task.state, func.count()).where(Task.id.in_(tasks))
                                    .group_by(Task.state)).tuples().all())
        assert states == {"leased": 20}  # the crowd holds them: nothing for moderators
        # what workers see: the two item cards; the pair key names the anchor first
        toloka = {t["input_values"]["item_id"]: t for t in emu.state.tasks.values()}
        with session_scope() as s:
            first = s.get(Task, tasks[0])
            key = f"{first.item_id}|{first.payload['other_item_id']}"
        assert toloka[key]["input_values"]["item_a"]["title"] == f"Item {0}"
        assert not toloka[key].get("known_solutions")
        rounds = _work(rt, emu, pushed.pool_id)
        again = push_queue(rt=rt, queue_name=queue)  # a re-push: nothing new anywhere
        # the cursor lost: a full re-read adds nothing
        with session_scope() as s:
            s.get(CrowdPool, pushed.pool_id).last_assignment_id = None
            s.get(CrowdPool, pushed.pool_id).state = "open"
        reread = pull_pool(rt=rt, pool_id=pushed.pool_id)
        restricted = {r["user_id"] for r in emu.state.restrictions.values()}
        n_toloka_tasks = len(emu.state.tasks)
    assert rounds[-1].state == "closed" and rounds[-1].kind == "pair"
    assert again.already_open and again.pool_id == pushed.pool_id and n_toloka_tasks == 30
    assert reread.judgments_added == 0 and reread.state == "closed"
    assert restricted == {"yes-man"} and "yes-man" in sum((r.banned for r in rounds), [])
    with session_scope() as s:
        pool = s.get(CrowdPool, pushed.pool_id)
        cts = s.scalars(select(CrowdTask).where(CrowdTask.pool_id == pool.id)).all()
        done = s.scalar(select(func.count()).select_from(Task).where(
            Task.id.in_(tasks), Task.state == "done"))
        judged = _pair_judgments(s, tasks)
        control = s.scalars(select(Judgment).where(Judgment.task_id.is_(None))).all()
        n_events = s.scalar(select(func.count()).select_from(DecisionEvent))
        ids = s.execute(select(Judgment.assignment_id, Judgment.item_id)).all()
    assert pool.kind == "pair" and pool.aggregation_method == "mv" and pool.spend > 0
    assert pool.config["crowd"]["overlap"] == 3 and len(pool.config["golden_pairs"]) == 10
    assert done == 20 and n_events == 0  # pair answers never decide an item
    assert {ct.outcome for ct in cts if not ct.is_golden} <= {"decided", "tie"}
    assert {ct.outcome for ct in cts if ct.is_golden} == {"control"}
    assert {j.label for j in judged} == {"same", "different"}
    assert {j.worker_kind for j in judged} == {"crowd"}
    assert all(j.crowd_pool_id == pool.id and j.assignment_id and j.worker_id for j in judged)
    assert {j.golden_label for j in control} == {"same", "different"}
    assert len(ids) == len(set(ids)) == pool.answers_count
    # the calibration reads the crowd's answers: the spammer's are not votes
    with session_scope() as s:
        votes = calibration.pair_votes(session=s, cal=CAL)
        run = calibration.run_calibration(session=s, kind="similarity", cal=CAL,
                                          settings=settings, policy=policy, now=utcnow())
        counted = s.scalar(select(func.count()).select_from(Judgment).where(
            Judgment.task_id.in_(tasks), Judgment.worker_id != "yes-man",
            Judgment.assignment_status != "REJECTED"))
        result, message = run.result, run.message
    assert len(votes) == 20 and votes["n_votes"].sum() == counted
    assert (votes["n_votes"] >= 3).all()
    true_same = [truth[str(a)] == truth[str(b)]
                 for a, b in zip(votes["item_id"], votes["other_item_id"], strict=True)]
    assert (votes["same"] == true_same).mean() >= 0.9
    assert result["proposed_version"] is not None, message
    assert 0.1 <= result["reuse_distance"]["threshold"] < 0.2


def test_a_tie_gets_more_answers_then_stays_a_tie(settings, policy):
    """Two workers who always disagree: tied pairs are asked again up to the maximum
    overlap; when nobody is left to answer, the pair is done as a tie (not same)."""
    cal = CalibrationSettings(pair_audience="crowd", pair_overlap=2)
    queue, truth, tasks = seed_pair_queue(settings, policy, n_same=3, n_diff=0, cal=cal)
    crowd = CrowdSettings(tasks_per_suite=3, golden_per_suite=0, max_overlap=3)
    workers = [SimWorker("right", accuracy=1.0), SimWorker("wrong", accuracy=0.0)]
    with Emulator(seed=0, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        rt.cal = cal
        pushed = push_queue(rt=rt, queue_name=queue)
        assert pushed.golden == 0
        rounds = _work(rt, emu, pushed.pool_id)
    assert rounds[0].asked_more == 3 and rounds[-1].state == "closed"
    assert sum(r.ties for r in rounds) == 3 and sum(r.decided for r in rounds) == 0
    with session_scope() as s:
        votes = calibration.pair_votes(session=s, cal=cal)
        states = {s.get(Task, t).state for t in tasks}
    assert states == {"done"}
    assert list(votes["n_votes"]) == [2, 2, 2] and not votes["same"].any()


def test_pair_answers_without_control_pairs_refused_unless_switched_off(settings, policy):
    queue, truth, _ = seed_pair_queue(settings, policy, n_same=2, n_diff=1, n_golden=1)
    with Emulator(seed=0, workers=2, truth=truth) as emu:
        rt = crowd_runtime(settings, CrowdSettings(), policy, emu.url)
        rt.cal = CAL
        with pytest.raises(ValidationFailed, match="control pairs"):
            push_queue(rt=rt, queue_name=queue)
        with pytest.raises(ValidationFailed, match="majority vote"):
            push_queue(rt=rt, queue_name=queue, method="ds")
        rt.crowd = CrowdSettings(golden_per_suite=0)
        assert push_queue(rt=rt, queue_name=queue).golden == 0


def test_who_works_the_pair_queue_and_queues_that_make_no_pool(settings, policy):
    moderators = CalibrationSettings(pair_audience="moderators")
    queue, truth, _ = seed_pair_queue(settings, policy, n_same=2, n_diff=1, cal=moderators)
    with session_scope() as s:
        # a crowd queue holding pair tasks: neither a label pool nor the pair queue
        anchor = s.scalar(select(Task.item_id).order_by(Task.id).limit(1))
        queues.enqueue(session=s, kind="NEW_PRODUCTS", item_ids=[anchor], now=utcnow(),
                       settings=settings, task_type="pair",
                       payloads=[{"other_item_id": anchor + 1, "distance": 0.1}])
        odd = s.scalar(select(Queue.name).where(Queue.kind == "NEW_PRODUCTS"))
    with Emulator(seed=0, workers=2, truth=truth) as emu:
        rt = crowd_runtime(settings, CrowdSettings(), policy, emu.url)
        rt.cal = moderators
        with pytest.raises(ValidationFailed, match="QUORUM_CALIBRATION_PAIR_AUDIENCE"):
            push_queue(rt=rt, queue_name=queue)
        with pytest.raises(ValidationFailed, match="holds pair tasks"):
            push_queue(rt=rt, queue_name=odd)
        rt.cal = CAL  # the setting now says crowd: the queue goes to the crowd
        pushed = push_queue(rt=rt, queue_name=queue)
        assert pushed.kind == "pair" and pushed.items == 3
    with session_scope() as s:
        assert s.scalar(select(Queue.audience).where(Queue.name == queue)) == "crowd"


def test_offline_runs_one_after_another_through_the_cli(settings, db_url):
    """``quorum crowd push`` offline twice — a label queue, then the pair queue: each run's
    emulator is new, its ids continue after the first's, nothing collides."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    from backend.policy import get_policy
    from tests.backend.test_crowd_support import seed_queue

    label_queue, _ = seed_queue(settings, get_policy(), n=6, n_golden=4, start=500)
    pair_queue, _, tasks = seed_pair_queue(settings, get_policy(), n_same=4, n_diff=2)
    env = {"QUORUM_DATABASE_URL": settings.resolved_database_url,
           "QUORUM_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false",
           "QUORUM_CROWD_EMULATOR_WORKERS": "12"}
    outputs = []
    for queue in (label_queue, pair_queue):
        r = subprocess.run([sys.executable, "-m", "backend.cli", "crowd", "push", queue],
                           capture_output=True, text=True, env=env, timeout=180)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout)
    assert "crowd pair pool" in outputs[1] and "6 pairs" in outputs[1]
    with session_scope() as s:
        pools = s.scalars(select(CrowdPool).order_by(CrowdPool.id)).all()
        done = s.scalar(select(func.count()).select_from(Task).where(
            Task.id.in_(tasks), Task.state == "done"))
        n_judgments = s.scalar(select(func.count()).select_from(Judgment))
    assert [(p.kind, p.state) for p in pools] == [("item", "closed"), ("pair", "closed")]
    assert pools[0].toloka_pool_id != pools[1].toloka_pool_id
    assert done == 6 and n_judgments == sum(p.answers_count for p in pools)


def test_a_crashed_pair_push_resumes_without_duplicates(settings, policy):
    from backend.crowdwork.store import DbStore
    from backend.db import get_sessionmaker
    from tests.backend.test_crowd_faults import Crash, CrashAfterPoolCreated

    queue, truth, _ = seed_pair_queue(settings, policy, n_same=5, n_diff=3)
    crowd = CrowdSettings(tasks_per_suite=3)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with Emulator(seed=1, workers=8, truth=truth) as emu:
        crashing = crowd_runtime(settings, crowd, policy, emu.url,
                                 store=CrashAfterPoolCreated(sessions))
        crashing.cal = CAL
        with pytest.raises(Crash):
            push_queue(rt=crashing, queue_name=queue)
        assert len(emu.state.pools) == 1 and not emu.state.tasks
        rt = crowd_runtime(settings, crowd, policy, emu.url, store=DbStore(sessions))
        rt.cal = CAL
        again = push_queue(rt=rt, queue_name=queue)
        assert again.resumed and again.kind == "pair" and (again.created, again.reused) == (18, 0)
        assert len(emu.state.pools) == 1 and len(emu.state.tasks) == 18
    with session_scope() as s:
        cts = s.scalars(select(CrowdTask)).all()
    assert len(cts) == 18 and len({ct.toloka_task_id for ct in cts if ct.toloka_task_id}) == 18
