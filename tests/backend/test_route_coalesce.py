"""A ``route`` job on PostgreSQL also routes other ``received`` items whose jobs have not
started (``QUORUM_JOBS_ROUTE_COALESCE``), claimed with advisory locks so that two jobs
never take the same items; a job whose items were taken waits, then finds them routed.

Measured before: one MiniLM worker fed 5 items a call routed 1.5 items/s, a job per call
(docs/benchmarks.md, the pipeline bench): per-job costs were paid per 5 items.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from backend.db import get_sessionmaker, session_scope
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.service import ingest
from backend.jobs import stages
from backend.queues.models import Task
from tests.conftest import item_row


@pytest.fixture
def pg_url(settings) -> str:  # noqa: ANN001
    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        pytest.skip("claims are PostgreSQL advisory locks; SQLite's one in-process worker "
                    "routes the oldest received items in batches already")
    return url


def _ingest(url: str, policy, start: int, n: int) -> list[int]:  # noqa: ANN001
    with session_scope(url) as s:
        _, ids = ingest(session=s, rows=[item_row(start + i) for i in range(n)], policy=policy)
    return ids


def _states(url: str, ids: list[int]) -> dict[int, str]:
    with session_scope(url) as s:
        return dict(s.execute(select(ItemStatus.item_id, ItemStatus.state)
                              .where(ItemStatus.item_id.in_(ids))).tuples().all())


def test_a_job_routes_waiting_items_with_its_own(pg_url, settings, policy):  # noqa: ANN001
    first = _ingest(pg_url, policy, 0, 3)
    waiting = _ingest(pg_url, policy, 100, 12)  # their own jobs have not run yet
    summary = stages.route_staged(sessions=get_sessionmaker(pg_url), item_ids=first,
                                  settings=settings, coalesce=8)
    assert summary.items == 3 + 8  # old code: 3 (only its own)
    states = _states(pg_url, first + waiting)
    assert all(states[i] != "received" for i in first + waiting[:8])  # the oldest first
    assert all(states[i] == "received" for i in waiting[8:])
    # the waiting items' own job then finds them routed and routes only the rest, once
    again = stages.route_staged(sessions=get_sessionmaker(pg_url), item_ids=waiting[:6],
                                settings=settings, coalesce=0)
    assert again.items == 0
    with session_scope(pg_url) as s:
        per_item = s.execute(select(Task.item_id, func.count()).group_by(Task.item_id)
                             ).tuples().all()
        events = s.execute(select(DecisionEvent.item_id, func.count())
                           .group_by(DecisionEvent.item_id)).tuples().all()
    assert all(n == 1 for _, n in per_item) and all(n == 1 for _, n in events)


def test_two_jobs_never_claim_the_same_items(pg_url, settings, policy):  # noqa: ANN001
    sessions = get_sessionmaker(pg_url)
    a_own = _ingest(pg_url, policy, 0, 2)
    others = _ingest(pg_url, policy, 100, 10)
    c_own = _ingest(pg_url, policy, 200, 2)
    with stages._claimed(sessions, a_own, 5) as a:
        assert a.others == others[:5] and a.taken == []
        with stages._claimed(sessions, c_own, 20) as c:  # a second worker, meanwhile
            assert not set(c.others) & (set(a.others) | set(a_own))
            assert set(c.others) == set(others[5:]) and c.taken == []
        with stages._claimed(sessions, others[:2], 0) as d:  # nothing claimed: extra 0
            assert d.others == [] and d.taken == []


def test_a_job_whose_items_were_taken_prepares_the_rest_then_waits(pg_url, settings, policy,  # noqa: ANN001
                                                                     monkeypatch):
    from backend.routing import pipeline

    sessions = get_sessionmaker(pg_url)
    a_own = _ingest(pg_url, policy, 0, 2)
    b_own = _ingest(pg_url, policy, 100, 3)
    result: dict[str, object] = {}
    release = threading.Event()
    prepared: dict[str, list[int]] = {}
    precompute = pipeline.precompute_rules

    def spying(*, session, item_ids, hooks=None):  # noqa: ANN001, ANN202
        prepared[threading.current_thread().name] = sorted(item_ids)
        return precompute(session=session, item_ids=item_ids, hooks=hooks)

    monkeypatch.setattr(stages, "precompute_rules", spying)

    def job_a() -> None:  # takes b's oldest item, holds it until told, then routes
        with stages._claimed(sessions, a_own, 1) as claim:
            result["a_took"] = claim.others
            release.wait(10)
            result["a"] = stages._route_staged(sessions=sessions,
                                               item_ids=[*a_own, *claim.others],
                                               settings=settings)

    def job_b() -> None:
        t = time.monotonic()
        result["b"] = stages.route_staged(sessions=sessions, item_ids=b_own,
                                          settings=settings, coalesce=10)
        result["b_waited"] = time.monotonic() - t

    ta = threading.Thread(target=job_a, name="a")
    ta.start()
    deadline = time.monotonic() + 10
    while "a_took" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result["a_took"] == b_own[:1]
    tb = threading.Thread(target=job_b, name="b")
    tb.start()
    deadline = time.monotonic() + 10
    while "b" not in prepared and time.monotonic() < deadline:
        time.sleep(0.05)
    assert prepared["b"] == b_own[1:]  # b prepares its other items meanwhile, not a's
    time.sleep(0.5)
    assert "b" not in result  # then waits for a instead of routing a's item itself
    release.set()
    ta.join(20)
    tb.join(20)
    assert result["a"].items == 3  # type: ignore[union-attr]
    assert result["b"].items == 2  # type: ignore[union-attr]
    assert all(s != "received" for s in _states(pg_url, a_own + b_own).values())
    with session_scope(pg_url) as s:
        per_item = s.execute(select(Task.item_id, func.count()).group_by(Task.item_id)
                             ).tuples().all()
    assert len(per_item) == 5 and all(n == 1 for _, n in per_item)
