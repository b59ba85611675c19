"""A lease-only transaction's commit does not wait for the disk flush; a decision's always
does; concurrent leases never wait on each other's expiry.

See ``backend.queues.service.relax_commit_flush`` and docs/reliability.md.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update

from backend.db import get_sessionmaker, session_scope, utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.queues import service as queues
from backend.queues.models import Task
from backend.users.service import create_user
from tests.conftest import auth, item_row

pytestmark = pytest.mark.usefixtures("settings")


def _pg(settings) -> None:  # noqa: ANN001
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("synchronous_commit and row locks are PostgreSQL's")


def _queued(settings, policy, n: int = 2) -> tuple[list[int], int]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(n)], policy=policy)
        queues.enqueue(session=s, kind="MANUAL", item_ids=ids, now=utcnow(), settings=settings)
        uid = create_user(session=s, username="m", role="moderator", queue_kinds=["MANUAL"]).id
    return ids, uid


def _sync_commit(s) -> str:  # noqa: ANN001
    return s.execute(text("SHOW synchronous_commit")).scalar_one()


def test_a_lease_only_transaction_skips_the_flush_a_decision_turns_it_back_on(
        settings, policy):  # noqa: ANN001
    _pg(settings)
    ids, _ = _queued(settings, policy)
    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as s:
        queues.relax_commit_flush(s)
        assert _sync_commit(s) == "off"
        record_decisions(session=s, decisions=[NewDecision(
            item_id=ids[0], label="ok", source="moderator", user_id=None)])
        assert _sync_commit(s) == "on"  # the decision's commit waits for the disk
        s.commit()
        # the setting was the transaction's own: the next one starts from the default
        assert _sync_commit(s) == "on"
        s.rollback()


def test_the_relaxed_flag_belongs_to_one_transaction(settings, policy):  # noqa: ANN001
    _pg(settings)
    ids, _ = _queued(settings, policy)
    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as s:
        queues.relax_commit_flush(s)
        s.commit()
        # a later transaction in the same session is not relaxed: nothing to turn back on
        record_decisions(session=s, decisions=[NewDecision(
            item_id=ids[0], label="ok", source="moderator", user_id=None)])
        assert _sync_commit(s) == "on"
        s.commit()


def test_api_lease_is_committed_and_visible_at_once(settings, policy, client, make_user):  # noqa: ANN001
    _queued(settings, policy)
    _, token = make_user("lm", kinds=["MANUAL"])
    r = client.post("/api/v1/tasks/lease", json={}, headers=auth(token))
    assert r.status_code == 200, r.text
    task_id = r.json()["task"]["id"]
    with session_scope(settings.resolved_database_url) as s:  # another connection
        task = s.get(Task, task_id)
        assert task.state == "leased"
    r = client.post(f"/api/v1/tasks/{task_id}/verdict", json={"label": "ok"},
                    headers=auth(token))
    assert r.status_code == 200, r.text


def test_expiry_skips_rows_another_transaction_holds(settings, policy):  # noqa: ANN001
    """A lease that finds expired rows locked by another transaction (a verdict finishing
    one, another lease expiring them) goes on instead of queueing behind that commit."""
    _pg(settings)
    _, uid = _queued(settings, policy, n=2)
    now = utcnow()
    factory = get_sessionmaker(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as s:
        s.execute(update(Task).values(state="leased", lease_owner_id=uid,
                                      lease_expires_at=now - timedelta(seconds=5)))
    with factory() as holder, factory() as other:
        locked = holder.execute(text("SELECT id FROM tasks ORDER BY id LIMIT 1 FOR UPDATE")
                                ).scalar_one()
        other.execute(text("SET LOCAL lock_timeout = '2s'"))
        # old code: the UPDATE waited for the holder's row and failed on the lock timeout
        assert queues.expire_leases(session=other, now=now) == 1
        other.commit()
        holder.rollback()
        with session_scope(settings.resolved_database_url) as s:
            states = {t.id: t.state for t in s.query(Task)}
        assert states[locked] == "leased"
        assert sorted(states.values()) == ["leased", "pending"]
        with session_scope(settings.resolved_database_url) as s:  # the next one catches it
            assert queues.expire_leases(session=s, now=now) == 1
