"""Undo a moderator's verdict: a superseding event, never a deletion.

An undo appends a decision event with ``source="undo"`` (not human: it is no label) that
supersedes the verdict and records what it restores (``details.undo_of``,
``details.restores``); the item's status goes back to the decision that stood before the
verdict (an automatic one, or none) and to ``queued``; the verdict's task is opened again
(to the same moderator in the work view, to the queue after a cluster undo) so the item is
answered afresh on a new attempt. The moderator's judgment row stays, marked
``assignment_status="WITHDRAWN"`` so that nothing counts it as a label.

Only your own verdicts, only while they are still the item's current decision (nobody has
decided the item since), and only within ``UNDO_WINDOW``. Each step is a conditional
UPDATE checked by its row count, so an undo racing another decision on the same item
either wins whole or is refused (409) whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.crowdwork.models import Judgment
from backend.db import insert_returning_ids
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import Conflict, NotFound
from backend.queues.models import Queue, Task
from backend.users.models import User

UNDO_WINDOW = timedelta(minutes=15)
MAX_AT_ONCE = 500


@dataclass
class Undone:
    event_id: int  # the undo event
    verdict_id: int
    item_id: int
    task_id: int | None
    label: str


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def last_undoable(*, session: Session, user: User, now: datetime) -> DecisionEvent | None:
    """``user``'s latest verdict from the work view, if it can still be undone."""
    ev = session.scalar(select(DecisionEvent).where(
        DecisionEvent.user_id == user.id, DecisionEvent.source == "moderator")
        .order_by(DecisionEvent.id.desc()).limit(1))
    if ev is None or _aware(ev.created_at) < now - UNDO_WINDOW:
        return None
    current = session.scalar(select(ItemStatus.event_id).where(ItemStatus.item_id == ev.item_id))
    return ev if current == ev.id else None


def undo_verdicts(*, session: Session, user: User, event_ids: Sequence[int], now: datetime,
                  relet_to: User | None = None, lease_seconds: int = 300) -> list[Undone]:
    """Undo ``user``'s verdicts ``event_ids`` (all or nothing). With ``relet_to`` the tasks
    are leased again to that moderator (the work view's undo), else they go back to pending.
    """
    ids = sorted(set(int(i) for i in event_ids))
    if not ids:
        raise NotFound("no decision to undo")
    if len(ids) > MAX_AT_ONCE:
        raise Conflict(f"at most {MAX_AT_ONCE} decisions can be undone at once")
    events = list(session.scalars(select(DecisionEvent).where(DecisionEvent.id.in_(ids))
                                  .order_by(DecisionEvent.id)))
    if len(events) != len(ids):
        raise NotFound("some of these decisions do not exist")
    for ev in events:
        if ev.source != "moderator" or ev.user_id != user.id:
            raise Conflict(f"decision {ev.id} is not a verdict of yours: only your own "
                           "verdicts can be undone")
        if _aware(ev.created_at) < now - UNDO_WINDOW:
            minutes = int(UNDO_WINDOW.total_seconds() // 60)
            raise Conflict(f"decision {ev.id} is older than {minutes} minutes and can no "
                           "longer be undone; decide the item again instead")
    prev_ids = [ev.supersedes_id for ev in events if ev.supersedes_id is not None]
    prev = {p.id: p for p in session.scalars(
        select(DecisionEvent).where(DecisionEvent.id.in_(prev_ids)))} if prev_ids else {}
    kinds = dict(session.execute(select(Task.id, Queue.kind).join(Queue, Queue.id == Task.queue_id)
                                 .where(Task.id.in_([e.task_id for e in events if e.task_id])))
                 .tuples().all())
    rows = [{"item_id": ev.item_id, "label": ev.label, "source": "undo", "is_human": False,
             "user_id": user.id, "task_id": ev.task_id, "supersedes_id": ev.id,
             "details": {"undo_of": ev.id, "restores": ev.supersedes_id}, "created_at": now}
            for ev in events]
    undo_ids = insert_returning_ids(session, DecisionEvent.__table__, rows)
    out: list[Undone] = []
    for ev, undo_id in zip(events, undo_ids, strict=True):
        before = prev.get(ev.supersedes_id) if ev.supersedes_id else None
        # the status moves only if this verdict is still the item's current decision
        changed = session.execute(
            update(ItemStatus).where(ItemStatus.item_id == ev.item_id,
                                     ItemStatus.event_id == ev.id)
            .values(event_id=undo_id, state="queued",
                    label=before.label if before else None,
                    source=before.source if before else None,
                    is_human=before.is_human if before else False,
                    decided_at=before.created_at if before else None,
                    queue_kind=kinds.get(ev.task_id), updated_at=now)
            .execution_options(synchronize_session=False)).rowcount
        if changed != 1:
            raise Conflict(f"item {ev.item_id} was decided again since your verdict "
                           f"(decision {ev.id}); open the item page to see by whom")
        if ev.task_id is not None:
            values: dict[str, object] = {"state": "pending", "lease_owner_id": None,
                                         "leased_at": None, "lease_expires_at": None,
                                         "done_at": None}
            if relet_to is not None:
                values = {"state": "leased", "lease_owner_id": relet_to.id, "leased_at": now,
                          "lease_expires_at": now + timedelta(seconds=lease_seconds),
                          "lease_count": Task.lease_count + 1, "done_at": None}
            opened = session.execute(
                update(Task).where(Task.id == ev.task_id, Task.state == "done")
                .values(**values).execution_options(synchronize_session=False)).rowcount
            if opened != 1:
                raise Conflict(f"task {ev.task_id} is not done any more; nothing was undone")
            session.execute(update(Judgment).where(
                Judgment.task_id == ev.task_id, Judgment.user_id == user.id,
                Judgment.worker_kind == "moderator", Judgment.label == ev.label,
                Judgment.assignment_status.is_(None))
                .values(assignment_status="WITHDRAWN")
                .execution_options(synchronize_session=False))
        out.append(Undone(event_id=undo_id, verdict_id=ev.id, item_id=ev.item_id,
                          task_id=ev.task_id, label=ev.label))
    session.flush()
    return out
