"""Verdicts are atomic: one winner per task attempt, no late verdict over a fresh lease, no
verdict on a task nobody leased or on a crowd task, one head per item's decision chain.

The races run with two real sessions (two connections): threads released together by a
barrier, and on PostgreSQL also a fixed interleaving (the first request has read the task,
a second one commits, then the first writes), the shape the review reproduced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.crowdwork.common import lease_to_crowd
from backend.crowdwork.models import Judgment
from backend.db import get_sessionmaker, session_scope, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.decisions.service import NewDecision, record_decisions
from backend.errors import LeaseLost
from backend.items.service import ingest
from backend.queues import service as queues
from backend.queues.models import Task
from backend.queues.work import submit_verdict
from backend.users.models import User
from backend.users.service import create_user
from tests.conftest import auth, item_row


def _setup(settings, policy, n: int = 1, kind: str = "MANUAL",  # noqa: ANN001
           users: tuple[str, ...] = ("a", "b"), **over: Any) -> tuple[list[int], dict[str, int]]:
    """Commit ``n`` items queued in ``kind`` and moderators granted it; (item ids, user ids)."""
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(i, **over) for i in range(n)], policy=policy)
        queues.enqueue(session=s, kind=kind, item_ids=ids, now=utcnow(), settings=settings)
        uids = {u: create_user(session=s, username=u, role="moderator", queue_kinds=[kind]).id
                for u in users}
    return ids, uids


def _lease(settings, user_id: int, **kw: Any) -> int:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        task = queues.lease_next(session=s, user=s.get(User, user_id), settings=settings,
                                 now=kw.pop("now", utcnow()), **kw)
        assert task is not None
        return task.id


def _verdict(settings, policy, task_id: int, user_id: int, label: str,  # noqa: ANN001
             **kw: Any) -> Any:
    with session_scope(settings.resolved_database_url) as s:
        return submit_verdict(session=s, task_id=task_id, user=s.get(User, user_id),
                              label=label, policy=policy, now=kw.pop("now", utcnow()), **kw)


def _human_answers(settings, task_id: int) -> tuple[int, int]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        judgments = s.scalar(select(func.count()).where(Judgment.task_id == task_id))
        events = s.scalar(select(func.count()).where(DecisionEvent.task_id == task_id,
                                                     DecisionEvent.is_human.is_(True)))
        return judgments or 0, events or 0


def assert_one_chain(s: Session, item_id: int) -> list[int]:
    """The item's effective events form one chain ending at its status; returns it."""
    events = s.scalars(select(DecisionEvent).where(DecisionEvent.item_id == item_id)
                       .order_by(DecisionEvent.id)).all()
    chain = [e for e in events if not (e.details or {}).get("status_unchanged")]
    assert [e.supersedes_id for e in chain] == [None] + [e.id for e in chain[:-1]], (
        f"item {item_id}: forked chain {[(e.id, e.supersedes_id) for e in chain]}")
    status = s.get(ItemStatus, item_id, populate_existing=True)
    assert status is not None and status.event_id == (chain[-1].id if chain else None)
    return [e.id for e in chain]


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(k: int) -> None:
        barrier.wait()
        try:
            out[k] = calls[k]()
        except Exception as exc:  # noqa: BLE001
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


# --- two verdicts on one leased task -------------------------------------------------------

def test_two_concurrent_verdicts_on_one_task_one_wins(settings, policy):
    ids, users = _setup(settings, policy, n=8)
    for _ in ids:
        tid = _lease(settings, users["a"])
        out = _race(lambda t=tid: _verdict(settings, policy, t, users["a"], "ok"),
                    lambda t=tid: _verdict(settings, policy, t, users["a"], "adult"))
        won = [r for r in out if not isinstance(r, Exception)]
        lost = [r for r in out if isinstance(r, Exception)]
        assert len(won) == 1 and len(lost) == 1, out
        assert isinstance(lost[0], LeaseLost) and "already done" in lost[0].message
        assert _human_answers(settings, tid) == (1, 1)


def test_same_verdict_sent_twice_at_once_is_one_answer(settings, policy):
    ids, users = _setup(settings, policy, n=4)
    for _ in ids:
        tid = _lease(settings, users["a"])
        out = _race(lambda t=tid: _verdict(settings, policy, t, users["a"], "ok"),
                    lambda t=tid: _verdict(settings, policy, t, users["a"], "ok"))
        assert not [r for r in out if isinstance(r, Exception)], out
        assert sorted(r.replayed for r in out) == [False, True]
        assert out[0].judgment_id == out[1].judgment_id and out[0].event_id == out[1].event_id
        assert _human_answers(settings, tid) == (1, 1)


def test_verdict_after_the_task_was_read_and_finished_by_another_request(settings, policy):
    """The first request read the task as leased; a second verdict commits; the first then
    writes. Before the fix the first one saw its stale copy and wrote a second answer."""
    if settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("SQLite transactions hold the write lock from their first statement: "
                    "no other verdict can commit between this read and write")
    _, users = _setup(settings, policy)
    tid = _lease(settings, users["a"])
    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as first:
        me = first.get(User, users["a"])
        held = queues.get_task(session=first, task_id=tid)  # the route's read, kept
        assert held.state == "leased"
        _verdict(settings, policy, tid, users["a"], "adult")  # another request wins
        with pytest.raises(LeaseLost, match="already done"):
            submit_verdict(session=first, task_id=tid, user=me, label="ok", policy=policy,
                           now=utcnow())
        first.rollback()
    assert _human_answers(settings, tid) == (1, 1)


# --- expired leases ------------------------------------------------------------------------

def test_late_verdict_on_a_lease_someone_else_took_is_refused(settings, policy):
    ids, users = _setup(settings, policy)
    now = utcnow()
    tid = _lease(settings, users["a"], now=now, lease_seconds=60)
    later = now + timedelta(seconds=61)
    assert _lease(settings, users["b"], now=later) == tid
    with pytest.raises(LeaseLost, match="someone else leased"):
        _verdict(settings, policy, tid, users["a"], "ok", now=later)
    res = _verdict(settings, policy, tid, users["b"], "adult", now=later)
    assert res.task.state == "done"
    assert _human_answers(settings, tid) == (1, 1)
    with session_scope(settings.resolved_database_url) as s:
        assert len(assert_one_chain(s, ids[0])) == 1
        j = s.scalar(select(Judgment).where(Judgment.task_id == tid))
        assert (j.user_id, j.label, j.task_attempt) == (users["b"], "adult", 2)


def test_late_verdict_racing_a_fresh_lease_never_forks_the_chain(settings, policy):
    """A's lease has run out (not yet returned); B's lease and A's verdict go at once:
    exactly one of them gets the task, and the item gets at most one human decision."""
    _, users = _setup(settings, policy, n=12)  # B may take another task each round
    for _ in range(6):
        now = utcnow()
        tid = _lease(settings, users["a"], now=now - timedelta(seconds=120), lease_seconds=60)
        out = _race(lambda t=tid: _verdict(settings, policy, t, users["a"], "ok"),
                    lambda: _lease(settings, users["b"]))
        a_won = not isinstance(out[0], Exception)
        b_got = out[1] if not isinstance(out[1], Exception) else None
        assert a_won != (b_got == tid), out  # one or the other, never both
        if b_got == tid:
            _verdict(settings, policy, tid, users["b"], "adult")
        assert _human_answers(settings, tid) == (1, 1)
        with session_scope(settings.resolved_database_url) as s:
            assert len(assert_one_chain(s, s.get(Task, tid).item_id)) == 1
        if b_got is not None and b_got != tid:  # B took another task: finish it
            _verdict(settings, policy, b_got, users["b"], "ok")


def test_late_verdict_after_a_fresh_lease_committed_mid_request(settings, policy):
    """PostgreSQL, fixed order: A's request has read its (expired, not yet returned) lease;
    B leases the task and commits; A's verdict must then be refused."""
    if settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("SQLite transactions hold the write lock from their first statement")
    _, users = _setup(settings, policy)
    now = utcnow()
    tid = _lease(settings, users["a"], now=now - timedelta(seconds=120), lease_seconds=60)
    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as first:
        me = first.get(User, users["a"])
        task = queues.get_task(session=first, task_id=tid)
        assert (task.state, task.lease_owner_id) == ("leased", users["a"])
        assert _lease(settings, users["b"]) == tid
        with pytest.raises(LeaseLost, match="someone else leased"):
            submit_verdict(session=first, task_id=tid, user=me, label="ok", policy=policy,
                           now=now)
        first.rollback()
    _verdict(settings, policy, tid, users["b"], "adult")
    assert _human_answers(settings, tid) == (1, 1)


def test_own_expired_lease_nobody_took_is_accepted_once(settings, policy):
    _, users = _setup(settings, policy)
    now = utcnow()
    tid = _lease(settings, users["a"], now=now, lease_seconds=60)
    with session_scope(settings.resolved_database_url) as s:
        assert queues.expire_leases(session=s, now=now + timedelta(minutes=5)) == 1
    with pytest.raises(LeaseLost, match="not leased by you"):
        _verdict(settings, policy, tid, users["b"], "adult")  # B never held it
    res = _verdict(settings, policy, tid, users["a"], "ok")
    assert res.task.state == "done" and not res.replayed
    assert _human_answers(settings, tid) == (1, 1)


# --- tasks that are not the moderator's to answer ------------------------------------------

def test_verdict_on_a_task_nobody_leased_is_refused(settings, policy, client, make_user):
    _, users = _setup(settings, policy, users=("a",))
    with session_scope(settings.resolved_database_url) as s:
        tid = s.scalar(select(Task.id))
    with pytest.raises(LeaseLost, match="not leased by anyone"):
        _verdict(settings, policy, tid, users["a"], "ok")
    _, admin = make_user("root", "admin")
    r = client.post(f"/api/v1/tasks/{tid}/verdict", json={"label": "ok"}, headers=auth(admin))
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "lease_lost" and "lease it first" in r.json()["message"]
    assert _human_answers(settings, tid) == (0, 0)
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Task, tid).state == "pending"


def test_moderator_verdict_on_a_crowd_task_is_refused(settings, policy, client, make_user):
    """Golden GL items are answered only through the crowd: neither pending nor crowd-leased
    GL tasks take a moderator's (or an admin's) verdict."""
    ids, _ = _setup(settings, policy, n=2, kind="GL", users=(), is_golden=True,
                    golden_label="ok")
    admin_id, admin = make_user("root", "admin")
    with session_scope(settings.resolved_database_url) as s:
        tids = list(s.scalars(select(Task.id).order_by(Task.id)))
        assert s.get(Task, tids[0]).queue.audience == "crowd"
        lease_to_crowd(s, task_ids=[tids[1]], now=utcnow())
    for tid in tids:
        with pytest.raises(LeaseLost, match="answered only through the crowd"):
            _verdict(settings, policy, tid, admin_id, "ok")
        r = client.post(f"/api/v1/tasks/{tid}/verdict", json={"label": "ok"},
                        headers=auth(admin))
        assert r.status_code == 409 and "crowd" in r.json()["message"], r.text
        assert _human_answers(settings, tid) == (0, 0)
    with session_scope(settings.resolved_database_url) as s:
        assert [s.get(Task, t).state for t in tids] == ["pending", "leased"]
        assert s.scalar(select(func.count()).select_from(DecisionEvent)) == 0


# --- the constraints behind it -------------------------------------------------------------

def test_one_judgment_and_one_human_event_per_task_attempt(settings, policy):
    ids, users = _setup(settings, policy)
    tid = _lease(settings, users["a"])
    res = _verdict(settings, policy, tid, users["a"], "ok")
    url = settings.resolved_database_url
    with session_scope(url) as s:
        j = s.get(Judgment, res.judgment_id)
        e = s.get(DecisionEvent, res.event_id)
        assert (j.task_attempt, e.task_attempt) == (1, 1)
    row = {"item_id": ids[0], "task_id": tid, "task_attempt": 1, "worker_kind": "moderator",
           "user_id": users["b"], "worker_id": "b", "label": "adult", "created_at": utcnow()}
    with pytest.raises(IntegrityError), session_scope(url) as s:
        s.execute(insert(Judgment), [row])
    with pytest.raises(IntegrityError), session_scope(url) as s:
        record_decisions(session=s, decisions=[NewDecision(
            item_id=ids[0], label="adult", source="moderator", user_id=users["b"],
            task_id=tid, task_attempt=1)])
    # crowd answers carry no attempt: several per task stay allowed
    with session_scope(url) as s:
        s.execute(insert(Judgment), [{**row, "task_attempt": None, "worker_kind": "crowd",
                                      "user_id": None, "worker_id": f"w{k}"} for k in range(3)])
    # the next attempt of the task is a new slot
    with session_scope(url) as s:
        s.execute(insert(Judgment), [{**row, "task_attempt": 2}])
    assert _human_answers(settings, tid) == (5, 1)


def test_concurrent_decisions_on_one_item_keep_one_chain(settings, policy):
    """Two transactions decide the same item at once: the second waits for the first and
    supersedes its event (before the fix both superseded the same head: a fork)."""
    ids, _ = _setup(settings, policy, n=1)
    url = settings.resolved_database_url
    with session_scope(url) as s:
        record_decisions(session=s, decisions=[NewDecision(item_id=ids[0], label="ok",
                                                           source="rule")])
    factory = get_sessionmaker(url)
    first = factory()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope(url) as s:
                record_decisions(session=s, decisions=[NewDecision(
                    item_id=ids[0], label="fraud", source="moderator")])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        second_done.set()

    try:
        record_decisions(session=first, decisions=[NewDecision(
            item_id=ids[0], label="adult", source="crowd")])
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert not second_done.is_set()  # it waits for the item's status row
        first.commit()
    finally:
        first.close()
    thread.join(timeout=60)
    assert not errors, errors
    with session_scope(url) as s:
        chain = assert_one_chain(s, ids[0])
        assert len(chain) == 3
        assert s.get(ItemStatus, ids[0]).label == "fraud"
