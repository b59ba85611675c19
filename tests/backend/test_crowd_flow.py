"""The crowd's backend half through the real toloka-kit client against the local emulator:
push a crowd queue → simulated workers → pull → review → aggregate → crowd decisions."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment  # noqa: E402
from backend.crowdwork.runtime import open_crowd, work_rounds  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope  # noqa: E402
from backend.decisions.models import DecisionEvent, ItemStatus  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime, seed_queue  # noqa: E402


def test_push_work_pull_decides_with_provenance(settings, policy):
    queue, truth = seed_queue(settings, policy, n=24, n_golden=8)
    crowd = CrowdSettings(overlap=3, min_answers=3, max_overlap=5, target_confidence=0.7,
                          tasks_per_suite=4, golden_per_suite=1, aggregation="mv",
                          emulator_workers=12)
    workers = [SimWorker(f"w{i}", accuracy=0.97, seconds_per_task=10.0) for i in range(10)]
    with Emulator(seed=3, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        # every golden item is a control task (golden_min 10 > the 8 there are)
        assert (pushed.items, pushed.golden, pushed.created) == (24, 8, 32)
        with session_scope() as s:
            # the crowd holds the queue's tasks: nothing is left for moderators
            states = s.execute(select(Task.state, func.count()).join(Queue)
                               .where(Queue.name == queue).group_by(Task.state)).all()
            assert dict(states) == {"leased": 24}
        for _ in range(6):
            emu.work(pushed.toloka_pool_id)
            last = pull_pool(rt=rt, pool_id=pushed.pool_id)
            if last.state == "closed":
                break
    assert last.state == "closed"
    with session_scope() as s:
        events = s.scalars(select(DecisionEvent).where(DecisionEvent.source == "crowd")).all()
        pool = s.get(CrowdPool, pushed.pool_id)
        golden_items = set(s.scalars(select(CrowdTask.item_id).where(
            CrowdTask.pool_id == pool.id, CrowdTask.is_golden.is_(True))))
        ext = dict(s.execute(select(ItemStatus.item_id, ItemStatus.label)).tuples().all())
        done = s.scalar(select(func.count()).select_from(Task).join(Queue).where(
            Queue.name == queue, Task.state == "done"))
        n_judg = s.scalar(select(func.count()).select_from(Judgment))
    assert len(events) >= 20 and not {e.item_id for e in events} & golden_items
    e = events[0]
    assert (e.crowd_pool_id, e.aggregation_method, e.is_human) == (pool.id, "mv", True)
    assert e.confidence >= 0.7 and len(e.details["answers"]) == e.details["n_answers"] >= 3
    assert e.details["toloka_pool_id"] == pool.toloka_pool_id
    right = sum(ext[ev.item_id] == truth[str(ev.item_id)] for ev in events)
    assert right / len(events) >= 0.9
    assert done == 24 and pool.answers_count == n_judg and pool.spend > 0
    assert pool.last_assignment_id is not None


def test_offline_runtime_runs_rounds_to_completion(settings, policy):
    queue, truth = seed_queue(settings, policy, n=12, n_golden=6)
    crowd = CrowdSettings(overlap=2, tasks_per_suite=4, emulator_workers=10, aggregation="ds")
    with open_crowd(settings=settings, crowd=crowd, policy=policy, truth=truth) as c:
        assert c.is_local and c.emulator.url.startswith("http://127.0.0.1:")
        pushed = push_queue(rt=c.runtime, queue_name=queue)
        rounds = work_rounds(c, pool_id=pushed.pool_id, max_rounds=8)
    assert rounds[-1].state == "closed" and rounds[-1].unresolved == 0
    total = sum(r.decided + r.to_moderators for r in rounds)
    assert total == 12


def test_labels_fixture_matches_policy(policy):
    assert set(LABELS) <= set(policy.keys)


@pytest.mark.parametrize("method", ["wawa", "glad"])
def test_method_is_per_pool(settings, policy, method):
    queue, truth = seed_queue(settings, policy, n=8, n_golden=4)
    crowd = CrowdSettings(overlap=3, min_answers=3, tasks_per_suite=4, emulator_workers=8)
    with open_crowd(settings=settings, crowd=crowd, policy=policy, truth=truth) as c:
        pushed = push_queue(rt=c.runtime, queue_name=queue, method=method)
        work_rounds(c, pool_id=pushed.pool_id, max_rounds=6)
    with session_scope() as s:
        methods = set(s.scalars(select(DecisionEvent.aggregation_method)))
        assert s.get(CrowdPool, pushed.pool_id).aggregation_method == method
    assert methods == {method}


def test_training_pool_from_golden_items(settings, policy):
    """With ``training`` on, spare golden items become a training pool with a pass mark."""
    queue, truth = seed_queue(settings, policy, n=12, n_golden=30)
    crowd = CrowdSettings(overlap=2, min_answers=2, max_overlap=3, tasks_per_suite=4,
                          golden_per_suite=1, golden_min=4, golden_max=4, aggregation="mv",
                          pool_config={"training": True, "training_pass_mark": 60,
                                       "training_tasks_per_suite": 4})
    workers = [SimWorker(f"w{i}", accuracy=0.97, seconds_per_task=10.0) for i in range(6)]
    with Emulator(seed=5, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        again = push_queue(rt=rt, queue_name=queue)  # a retry creates nothing
        with session_scope() as s:
            pool = s.get(CrowdPool, pushed.pool_id)
            training_id = pool.toloka_training_id
            control = set(s.scalars(select(CrowdTask.item_id).where(
                CrowdTask.pool_id == pool.id, CrowdTask.is_golden.is_(True))))
        assert training_id is not None and again.already_open
        training_tasks = list(rt.client.get_tasks(pool_id=training_id))
    trained_on = {t.input_values["item_id"] for t in training_tasks}
    assert len(trained_on) == 16 and not trained_on & {str(i) for i in control}
    assert all(t.known_solutions for t in training_tasks)


def test_the_classifier_score_is_the_prior_and_the_report_shows_control_cost(settings, policy):
    """Issue #13: an item the classifier scored starts from that score (the crowd stops
    sooner where it agrees with a sharp score); ``golden_per_worker`` puts that many control
    tasks in the pool; the crowd report states the control tasks' cost and the reliability
    of the stated confidence against later human verdicts."""
    from backend.crowdwork.report import crowd_report
    from backend.db import utcnow
    from backend.decisions.service import NewDecision, record_decisions
    from backend.items.models import ItemScore

    queue, truth = seed_queue(settings, policy, n=16, n_golden=8)
    real = sorted(int(k) for k in truth if int(k) in _queued(queue))
    sharp = real[:8]  # a sharp, right score on half of the items; none on the rest
    with session_scope() as s:
        for i in sharp:
            scores = {lab: (0.97 if lab == truth[str(i)] else 0.03 / (len(LABELS) - 1))
                      for lab in LABELS}
            s.add(ItemScore(item_id=i, model_id="m1", threshold_set_version=None,
                            scores=scores, band="ML_UNSURE", created_at=utcnow()))
    crowd = CrowdSettings(overlap=1, min_answers=1, max_overlap=4, target_confidence=0.95,
                          tasks_per_suite=4, golden_per_suite=1, aggregation="sds",
                          pool_config={"golden_per_worker": 3})
    workers = [SimWorker(f"w{i}", accuracy=0.9, seconds_per_task=10.0) for i in range(8)]
    with Emulator(seed=5, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        assert pushed.golden == 3
        for _ in range(8):
            emu.work(pushed.toloka_pool_id)
            last = pull_pool(rt=rt, pool_id=pushed.pool_id)
            if last.state == "closed":
                break
    assert last.state == "closed"
    with session_scope() as s:
        n = dict(s.execute(select(CrowdTask.item_id, CrowdTask.overlap)
                           .where(CrowdTask.is_golden.is_(False))).tuples().all())
        events = s.scalars(select(DecisionEvent).where(DecisionEvent.source == "crowd")).all()
    with_score = sum(n[i] for i in sharp) / len(sharp)
    without = sum(n[i] for i in real if i not in sharp) / (len(real) - len(sharp))
    assert with_score < without, (with_score, without)
    assert all(e.label == truth[str(e.item_id)] for e in events)
    with session_scope() as s:  # a moderator re-decides one crowd decision, differently
        e = events[0]
        other = next(lab for lab in LABELS if lab != e.label)
        record_decisions(session=s, decisions=[NewDecision(
            item_id=e.item_id, label=other, source="moderator")], now=utcnow())
        report = crowd_report(session=s)
    control = report["control"]
    assert 0 < control["answers"] <= 3 * len(workers)
    assert 0 < control["share_of_spend"] < 0.5 and control["cost"] > 0
    assert [(r["n"], r["right"]) for r in report["reliability"]] == [(1, 0.0)]


def _queued(queue: str) -> set[int]:
    with session_scope() as s:
        return set(s.scalars(select(Task.item_id).join(Queue).where(Queue.name == queue)))


def test_a_tempered_decision_records_what_tempered_it(settings, policy):
    """Issue #13, provenance: with ``temper_min_gold`` the stated confidence is
    ``softmax(log p / T + b)``; each crowd decision's details carry T and the per-label
    bias b, so the decision can be replayed from what it records."""
    queue, truth = seed_queue(settings, policy, n=24, n_golden=8)
    crowd = CrowdSettings(overlap=3, min_answers=3, max_overlap=5, target_confidence=0.7,
                          tasks_per_suite=4, golden_per_suite=1, aggregation="sds",
                          emulator_workers=12, pool_config={"temper_min_gold": 2})
    workers = [SimWorker(f"w{i}", accuracy=0.85, seconds_per_task=10.0) for i in range(10)]
    with Emulator(seed=3, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        for _ in range(8):
            emu.work(pushed.toloka_pool_id)
            last = pull_pool(rt=rt, pool_id=pushed.pool_id)
            if last.state == "closed":
                break
    with session_scope() as s:
        events = s.scalars(select(DecisionEvent).where(DecisionEvent.source == "crowd")).all()
    assert events
    for e in events:
        assert e.details["temperature"] >= 1.0
        bias = e.details["class_bias"]
        assert e.label in bias and {a["label"] for a in e.details["answers"]} <= set(bias)
        assert all(-5.0 <= b <= 5.0 for b in bias.values())
