"""The backend's crowd job against a pool that behaves like a real one: ACTIVE, SKIPPED
and EXPIRED suites, PENDING operations, 429s and Toloka's own quality control."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.expiry import expire_stale_pools  # noqa: E402
from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from crowd.emulator import Emulator, Realism, SimWorker  # noqa: E402
from tests.backend.test_crowd_faults import _run  # noqa: E402
from tests.backend.test_crowd_support import crowd_runtime, seed_queue  # noqa: E402

REAL = dataclasses.replace(Realism.real_pool(), pending_polls=1)


def _queue_states(queue: str) -> Counter:
    from backend.queues.models import Queue, Task

    with session_scope() as s:
        return Counter(s.scalars(select(Task.state).join(Queue).where(Queue.name == queue)))


def test_pull_pool_counts_exactly_the_submitted_answers(settings, policy):
    queue, truth = seed_queue(settings, policy, n=16, n_golden=8)
    crowd = CrowdSettings(tasks_per_suite=2, overlap=2, min_answers=2, aggregation="mv",
                          target_confidence=0.6, pool_config={"quality_control": "toloka",
                                                    "golden_min_answers": 2})
    workers = [SimWorker(f"h{i}", accuracy=1.0, seconds_per_task=10.0) for i in range(6)]
    workers.insert(0, SimWorker("spam", kind="constant", seconds_per_task=10.0))
    with Emulator(seed=6, workers=workers, truth=truth, realism=REAL) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url, retries=8)
        pushed = push_queue(rt=rt, queue_name=queue)
        last = _run(rt, emu, pushed.pool_id, rounds=12)
        seen = Counter(a["status"] for a in emu.state.assignments.values())
        submitted = {(aid, t["input_values"]["item_id"])
                     for aid, a in emu.state.assignments.items()
                     if a["status"] in ("SUBMITTED", "ACCEPTED", "REJECTED") for t in a["tasks"]}
        n_429 = sum(1 for _, _, status in emu.requests if status == 429)
        puts = emu.calls("PUT /api/v1/user-restrictions")
        fired = {w for _, w, _ in emu.simulator.quality.fired}
    assert seen["SKIPPED"] and seen["EXPIRED"] and n_429
    assert last.state == "closed"
    with session_scope() as s:
        got = s.execute(select(Judgment.assignment_id, Judgment.item_id)).all()
        pool = s.get(CrowdPool, pushed.pool_id)
        outcomes = Counter(s.scalars(select(CrowdTask.outcome).where(
            CrowdTask.pool_id == pool.id, CrowdTask.is_golden.is_(False))))
        spam = set(s.scalars(select(Judgment.assignment_status)
                             .where(Judgment.worker_id == "spam")))
    assert len(got) == len(set(got))  # none twice
    assert {(a, str(i)) for a, i in got} == submitted  # exactly the submitted ones
    assert sum(outcomes.values()) == 16 and None not in outcomes  # every item resolved
    # Toloka's golden rule banned the spammer; Quorum read it, rejected, did not ban again
    assert "spam" in fired and puts == []
    assert "spam" in pool.config["banned"] and spam <= {"REJECTED", "ACCEPTED"}


def test_a_pool_closed_with_lapsed_suites_hands_its_tasks_back(settings, policy):
    queue, truth = seed_queue(settings, policy, n=8, n_golden=6)
    crowd = CrowdSettings(tasks_per_suite=4, overlap=2)
    workers = [SimWorker(f"w{i}", accuracy=0.95) for i in range(6)]
    with Emulator(seed=1, workers=workers, truth=truth,
                  realism=Realism(expired=0.6, pending_polls=1)) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        emu.work(pushed.toloka_pool_id)
        assert Counter(a["status"] for a in emu.state.assignments.values())["ACTIVE"]
        later = utcnow() + timedelta(days=crowd.crowd_config().pool_lifetime_days, hours=1)
        expired = expire_stale_pools(rt=rt, now=later)  # the pool outlived its deadline
    assert [e.pool_id for e in expired] == [pushed.pool_id] and expired[0].returned == 8
    assert _queue_states(queue) == {"pending": 8}  # back in Quorum's queue, none lost
    assert pull_pool(rt=rt, pool_id=pushed.pool_id).state == "expired"


def test_cli_says_rate_limited_or_operation_unfinished_in_a_sentence():
    import pytest

    from backend.crowdwork.cli import TolokaUnreachable, toloka_errors
    from crowd.emulator import Fault
    from crowd.toloka import make_client

    with Emulator(seed=0, workers=1, faults=[Fault("GET /api/v1/requester", kind="429")]) as emu:
        client = make_client(url=emu.url, retries=2, backoff=0.01)
        with pytest.raises(TolokaUnreachable, match="rate-limits"), toloka_errors(emu.url):
            client.get_requester()
    with pytest.raises(TolokaUnreachable, match="did not finish"), toloka_errors(None):
        raise TimeoutError
