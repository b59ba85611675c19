"""Moderators' daily capacity: what they cannot work today goes to the crowd, the
lowest-value first.

With ``QUORUM_MODERATOR_DAILY_CAPACITY=N`` (0: off) moderators are expected to work N
tasks a day. Their load is what they did today (tasks done since the start of the day in
``QUORUM_QUEUE_TIMEZONE``), what they hold (leased tasks, and expired leases a moderator
may still answer), and every pending task of a kind that never overflows. The room left
goes to the pending tasks of the kinds in ``QUORUM_MODERATOR_OVERFLOW_FROM`` by expected
value — how likely the item's decision flips (1 − ``Task.confidence``, the classifier's
top probability) times the queue's priority, oldest first among equals, the order the
crowd's budget uses too (`crowdwork.service.by_expected_value`). Those beyond the room
move to today's queue of ``QUORUM_MODERATOR_OVERFLOW_KIND``, a crowd queue: the
moderator task becomes ``overflow`` (one conditional ``UPDATE ... WHERE state =
'pending'``, checked row by row through ``RETURNING``: a task a moderator leased in the
meantime stays theirs) and a crowd task is queued for the item in the same transaction.

A later arrival of higher value takes the room of the lowest one still pending, which
moves then; a task that moved never comes back. The crowd's own returns
(``CROWD_DISAGREE``), spot checks, hash matches, appeals and pair tasks never overflow
(`check_settings` refuses such a configuration), so an item the crowd could not settle
is never bounced back to it. Runs after every routing transaction that queued an
overflowable kind (skipped while another run holds the lock; the periodic
``moderator_overflow`` job catches up) and on its own cron. With a daily crowd budget
(``QUORUM_CROWD_DAILY_BUDGET``) no more move than the budget left pays for, after the
tasks already waiting in the crowd's queues: the rest stay with moderators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from backend.db import in_values
from backend.decisions.models import ItemStatus
from backend.errors import ValidationFailed
from backend.queues.models import Queue, Task
from backend.queues.service import enqueue, queue_day
from backend.settings import Settings

#: Kinds whose tasks stay with moderators whatever the capacity: checks of decisions
#: already made, the crowd's and the platform's returns.
#: (The crowd's return kind, ``QUORUM_CROWD_DISAGREE_KIND``, is added by `never_overflow`.)
NEVER_OVERFLOW = frozenset({"SPOT_CHECK", "HASH_MATCH", "CROWD_DISAGREE", "APPEALS",
                            "SIMILAR_CONFLICT", "PAIRS"})
#: PostgreSQL advisory-lock key of a rebalance (one at a time)
_LOCK_KEY = "quorum.moderator_overflow"


@dataclass
class Capacity:
    """Where moderators stand today against their capacity."""

    capacity: int
    done_today: int
    held: int
    fixed_pending: int
    overflowable_pending: int
    moved_today: int
    moved_now: int = 0
    skipped: str | None = None

    @property
    def room(self) -> int:
        """Tasks of the overflowable kinds moderators still have room for today."""
        return max(self.capacity - self.done_today - self.held - self.fixed_pending, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "done_today": self.done_today, "held": self.held,
                "fixed_pending": self.fixed_pending,
                "overflowable_pending": self.overflowable_pending, "room": self.room,
                "moved_today": self.moved_today, "moved_now": self.moved_now,
                **({"skipped": self.skipped} if self.skipped else {})}


def never_overflow() -> frozenset[str]:
    from backend.crowdwork.settings import get_crowd_settings

    return NEVER_OVERFLOW | {get_crowd_settings().disagree_kind}


def check_settings(settings: Settings) -> None:
    """Refuse an overflow configuration that could bounce work between people and the
    crowd or hand the crowd what only moderators may judge."""
    never = never_overflow()
    bad = sorted(set(settings.moderator_overflow_from) & never)
    if bad:
        raise ValidationFailed(
            f"QUORUM_MODERATOR_OVERFLOW_FROM may not name {', '.join(bad)}: spot checks, "
            "hash matches, appeals, pair tasks and the crowd's own returns stay with "
            "moderators")
    crowd_kinds = sorted(set(settings.moderator_overflow_from) & set(settings.crowd_queue_kinds))
    if crowd_kinds:
        raise ValidationFailed(
            f"QUORUM_MODERATOR_OVERFLOW_FROM names crowd kinds ({', '.join(crowd_kinds)}); "
            "it lists moderator queue kinds")
    kind = settings.moderator_overflow_kind
    if kind in settings.moderator_overflow_from or kind in never:
        raise ValidationFailed(f"QUORUM_MODERATOR_OVERFLOW_KIND={kind} must be a crowd kind "
                               "of its own, not one that overflows or stays with moderators")


def day_start(now: datetime, settings: Settings) -> datetime:
    """The start of ``now``'s queue day (`queues.service.queue_day`), in UTC."""
    return datetime.combine(queue_day(now, settings), time(),
                            tzinfo=ZoneInfo(settings.queue_timezone)).astimezone(UTC)


def capacity(*, session: Session, settings: Settings, now: datetime) -> Capacity:
    """Moderators' load today against ``QUORUM_MODERATOR_DAILY_CAPACITY``: one query
    over the moderator tasks that are open, or were finished or moved today."""
    start = day_start(now, settings)
    overflowable = Queue.kind.in_(list(settings.moderator_overflow_from)) & (
        Task.task_type == "item")
    free = (Task.state == "pending") & Task.lease_owner_id.is_(None)
    done_today, held, fixed, waiting, moved = session.execute(
        select(func.count().filter(Task.state == "done"),
               func.count().filter((Task.state == "leased") | (
                   (Task.state == "pending") & Task.lease_owner_id.is_not(None))),
               func.count().filter(free & ~overflowable),
               func.count().filter(free & overflowable),
               func.count().filter(Task.state == "overflow"))
        .select_from(Task).join(Queue, Queue.id == Task.queue_id)
        .where(Queue.audience == "moderators",
               Task.state.in_(("pending", "leased"))
               | (Task.state.in_(("done", "overflow")) & (Task.done_at >= start)))).one()
    return Capacity(capacity=settings.moderator_daily_capacity, done_today=done_today,
                    held=held, fixed_pending=fixed, overflowable_pending=waiting,
                    moved_today=moved)


def _crowd_can_pay(*, session: Session, settings: Settings, now: datetime) -> int | None:
    """How many more items the crowd's daily budget pays for, less the item tasks already
    waiting in its queues (they are pushed first); None without a budget. Moving more
    would only park them in a crowd queue that cannot be pushed today."""
    from backend.crowdwork.service import budget_cap
    from backend.crowdwork.settings import get_crowd_settings

    crowd = get_crowd_settings()
    if crowd.daily_budget <= 0:
        return None
    budget = budget_cap(session=session, crowd=crowd, config=crowd.crowd_config(), now=now)
    waiting = session.scalar(
        select(func.count()).select_from(Task).join(Queue, Queue.id == Task.queue_id)
        .where(Queue.audience == "crowd", Task.state == "pending",
               Task.task_type == "item")) or 0
    return max(int(budget["items"]) - waiting, 0)


def rebalance(*, session: Session, settings: Settings, now: datetime,
              wait: bool = True) -> Capacity:
    """Move the pending overflowable tasks beyond moderators' room today to the crowd's
    overflow queue, lowest value first (see the module's docstring). One run at a time:
    PostgreSQL takes a transaction-level advisory lock (``wait=False``: give up at once
    if another run holds it), SQLite holds its write lock already."""
    cap = settings.moderator_daily_capacity
    if cap <= 0 or not settings.moderator_overflow_from:
        return Capacity(capacity=cap, done_today=0, held=0, fixed_pending=0,
                        overflowable_pending=0, moved_today=0, skipped="capacity is off")
    check_settings(settings)
    if session.get_bind().dialect.name == "postgresql":
        if wait:
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                            {"k": _LOCK_KEY})
        elif not session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"),
                                {"k": _LOCK_KEY}):
            state = capacity(session=session, settings=settings, now=now)
            state.skipped = "another rebalance is running"
            return state
    state = capacity(session=session, settings=settings, now=now)
    if state.overflowable_pending <= state.room:
        return state
    value = (1.0 - Task.confidence) * Queue.priority
    affordable = _crowd_can_pay(session=session, settings=settings, now=now)
    if affordable == 0:
        state.skipped = ("the crowd's daily budget (QUORUM_CROWD_DAILY_BUDGET) is committed "
                         "or already pays for the tasks waiting in the crowd's queues")
        return state
    beyond = session.execute(
        select(Task.id).join(Queue, Queue.id == Task.queue_id)
        .where(Queue.audience == "moderators", Queue.kind.in_(settings.moderator_overflow_from),
               Task.task_type == "item", Task.state == "pending",
               Task.lease_owner_id.is_(None))
        .order_by(value.desc(), Task.id).offset(state.room)
        .limit(affordable)).scalars().all()
    moved: list[tuple[int, int, float, str]] = []
    for i in range(0, len(beyond), 500):
        ids = beyond[i:i + 500]
        # the conditional UPDATE decides: a task leased since the SELECT is not moved
        rows = session.execute(
            update(Task).where(in_values(session, Task.id, ids), Task.state == "pending",
                               Task.lease_owner_id.is_(None))
            .values(state="overflow", done_at=now)
            .returning(Task.id, Task.item_id, Task.confidence, Task.queue_id)
            .execution_options(synchronize_session=False)).all()
        kinds = dict(session.execute(select(Queue.id, Queue.kind).where(
            Queue.id.in_({r[3] for r in rows}))).tuples().all()) if rows else {}
        moved.extend((r[0], r[1], float(r[2]), kinds[r[3]]) for r in rows)
    if moved:
        moved.sort()
        item_ids = [m[1] for m in moved]
        enqueue(session=session, kind=settings.moderator_overflow_kind, item_ids=item_ids,
                now=now, settings=settings, confidences={m[1]: m[2] for m in moved},
                payloads=[{"overflow_from": {"task_id": m[0], "kind": m[3]}} for m in moved])
        for i in range(0, len(item_ids), 500):
            session.execute(
                update(ItemStatus)
                .where(in_values(session, ItemStatus.item_id, item_ids[i:i + 500]),
                       ItemStatus.state == "queued")
                .values(queue_kind=settings.moderator_overflow_kind, updated_at=now)
                .execution_options(synchronize_session=False))
    session.flush()
    state.moved_now = len(moved)
    state.moved_today += len(moved)
    state.overflowable_pending -= len(moved)
    return state
