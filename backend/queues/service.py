"""Daily queues and tasks: naming, chunking, enqueueing, leases, verdicts.

A lease is taken atomically: on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED``
(concurrent moderators never wait on each other's row), on SQLite inside the
``BEGIN IMMEDIATE`` write transaction every session starts with (see ``backend.db``).
An expired lease goes back to ``pending``; ``expire_leases`` runs before every lease, so
no background job is needed for correctness. The task keeps its last ``lease_owner_id``
until someone else leases it: that moderator's late verdict is still accepted while
nobody else holds the task.

A verdict finishes a task with one conditional ``UPDATE ... WHERE id = :id AND
lease_owner_id = :me AND state IN ('leased', 'pending')`` (`finish_leased`) whose row
count decides: two verdicts on one task cannot both win, and a verdict cannot win
against a fresh lease somebody else took. The task's ``lease_count`` at that moment is
the *attempt* the judgment and the decision event are recorded under; a unique index on
``(task_id, task_attempt)`` of each makes a second human answer per attempt impossible
even if a code path forgot the check (see docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, and_, bindparam, exists, func, select, text, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from backend.db import in_values, insert_returning_ids
from backend.decisions.models import ItemStatus
from backend.errors import LeaseLost, NotFound, ValidationFailed
from backend.items.service import newest_scores
from backend.queues.models import TASK_TYPES, Queue, Task, TaskSkip
from backend.settings import Settings
from backend.types import TZDateTime
from backend.users.models import User


def queue_day(now: datetime, settings: Settings) -> date:
    return now.astimezone(ZoneInfo(settings.queue_timezone)).date()


def queue_name(kind: str, day: date, chunk: int, *, chunked: bool) -> str:
    """``KIND_YYYY-MM-DD`` for the first chunk of an unchunked kind, else ``..._n``."""
    base = f"{kind}_{day.isoformat()}"
    if chunked or chunk > 1:
        return f"{base}_{chunk}"
    return base


def _open_chunk(session: Session, *, kind: str, day: date, settings: Settings,
                priority: int | None) -> Queue:
    q = session.scalar(
        select(Queue).where(Queue.kind == kind, Queue.day == day)
        .order_by(Queue.chunk.desc()).limit(1)
    )
    if q is not None and q.total < settings.queue_chunk_size and not q.is_closed:
        return q
    chunk = (q.chunk + 1) if q is not None else 1
    q = Queue(
        name=queue_name(kind, day, chunk, chunked=kind in settings.queue_chunked_kinds),
        kind=kind, day=day, chunk=chunk,
        priority=priority if priority is not None else settings.priority_for(kind),
        audience=settings.audience_for(kind), total=0,
    )
    session.add(q)
    session.flush()
    return q


#: A task's confidence when the classifier never scored its item: as unsure as a coin.
UNSCORED = 0.5


def top_probability(scores: Mapping[str, float] | None) -> float:
    """The classifier's top probability for an item (``UNSCORED`` without scores);
    1 − it is how likely the item's decision flips, the number the crowd's push order
    uses too (`crowdwork.service.by_expected_value`)."""
    if not scores:
        return UNSCORED
    return max(0.0, min(1.0, max(float(v) for v in scores.values())))


def enqueue(*, session: Session, kind: str, item_ids: Sequence[int], now: datetime,
            settings: Settings, priority: int | None = None, task_type: str = "item",
            payloads: Sequence[dict[str, Any] | None] | None = None,
            confidences: Mapping[int, float] | None = None) -> list[int]:
    """Put items into today's queue(s) of ``kind``, chunking at ``queue_chunk_size``.

    An item that already has an open (pending or leased) task of this kind is not
    queued twice. Each task records the classifier's top probability for its item
    (`top_probability` of the newest ``ItemScore``, `items.service.newest_scores`, read
    in one query for the batch; 0.5 for an item never scored and for ``pair`` tasks):
    moderators lease the least sure first, the likeliest to flip (`lease_next`).
    ``confidences`` gives it for some items already (routing passes the scores it has
    just computed); the others are looked up. Returns the new task ids.
    """
    if not item_ids:
        return []
    if not kind or not kind.replace("_", "").isalnum() or kind.upper() != kind:
        raise ValidationFailed(f"queue kind must be UPPER_CASE letters, digits and _: {kind!r}")
    day = queue_day(now, settings)
    ids = list(item_ids)
    pl = list(payloads) if payloads is not None else [None] * len(ids)
    open_items: set[int] = set()
    for start in range(0, len(ids), 500):
        open_items.update(session.scalars(
            select(Task.item_id).join(Queue, Queue.id == Task.queue_id).where(
                Queue.kind == kind, Task.task_type == task_type,
                Task.state.in_(("pending", "leased")),
                in_values(session, Task.item_id, ids[start:start + 500]))))
    if open_items and confidences and task_type == "item":
        # re-scored while its task waits: the task takes the new score (its place in the
        # moderators' order and in the capacity's cut follows the newest score)
        fresh = sorted(i for i in open_items if i in confidences)
        if fresh:
            by_item = bindparam("b_item_id", type_=BigInteger)
            session.execute(
                update(Task.__table__).where(
                    Task.__table__.c.item_id == by_item, Task.__table__.c.task_type == "item",
                    Task.__table__.c.state == "pending",
                    Task.__table__.c.queue_id.in_(
                        select(Queue.id).where(Queue.kind == kind).scalar_subquery()))
                .values(confidence=bindparam("b_confidence")),
                [{"b_item_id": i, "b_confidence": float(confidences[i])} for i in fresh])
    todo = [(i, p) for i, p in zip(ids, pl, strict=True) if i not in open_items]
    seen: set[int] = set()
    todo = [(i, p) for i, p in todo if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]
    sure = dict(confidences or {})
    if task_type == "item":
        missing = [i for i, _ in todo if i not in sure]
        if missing:
            sure.update({i: top_probability(s) for i, s in
                         newest_scores(session=session, item_ids=missing).items()})
    else:  # a pair's order does not hang on one item's score
        sure = {}
    new_ids: list[int] = []
    while todo:
        q = _open_chunk(session, kind=kind, day=day, settings=settings, priority=priority)
        room = settings.queue_chunk_size - q.total
        batch, todo = todo[:room], todo[room:]
        rows = [{"queue_id": q.id, "item_id": i, "task_type": task_type, "payload": p,
                 "state": "pending", "lease_count": 0, "created_at": now,
                 "confidence": float(sure.get(i, UNSCORED))} for i, p in batch]
        new_ids.extend(insert_returning_ids(session, Task.__table__, rows, copy=True))
        session.execute(update(Queue).where(Queue.id == q.id)
                        .values(total=Queue.total + len(batch)))
        session.refresh(q)
    if new_ids:
        queued = [i for i, _ in zip(ids, pl, strict=True) if i not in open_items]
        for start in range(0, len(queued), 500):
            session.execute(
                update(ItemStatus)
                .where(in_values(session, ItemStatus.item_id, queued[start:start + 500]),
                       ItemStatus.state == "received")
                .values(state="queued", queue_kind=kind, updated_at=now))
    session.flush()
    return new_ids


def _expire_statement(*, skip_locked: bool) -> Any:
    expired = select(Task.id).where(
        Task.state == "leased", Task.lease_expires_at < bindparam("now", type_=TZDateTime()))
    if skip_locked:
        # A row another transaction is finishing or expiring right now is left to it:
        # concurrent leases never queue behind each other's expiry (or its commit).
        expired = expired.with_for_update(skip_locked=True)
    return (
        update(Task).where(Task.id.in_(expired.scalar_subquery()), Task.state == "leased",
                           Task.lease_expires_at < bindparam("now", type_=TZDateTime()))
        .values(state="pending", leased_at=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


_EXPIRE = _expire_statement(skip_locked=False)
_EXPIRE_SKIP_LOCKED = _expire_statement(skip_locked=True)


def expire_leases(*, session: Session, now: datetime) -> int:
    """Put every task whose lease has run out back to ``pending``.

    ``lease_owner_id`` stays: it names the last holder, whose late verdict is accepted
    until somebody else leases the task (a new lease overwrites it). On PostgreSQL rows
    locked by another transaction are skipped (that one is expiring or finishing them;
    the periodic ``expire_leases`` job and the next lease catch any left over)."""
    stmt = _EXPIRE_SKIP_LOCKED if session.get_bind().dialect.name == "postgresql" else _EXPIRE
    return session.execute(stmt, {"now": now}).rowcount or 0  # type: ignore[attr-defined]


def relax_commit_flush(session: Session) -> None:
    """Let this transaction's commit return before its WAL record reaches the disk
    (PostgreSQL ``SET LOCAL synchronous_commit = off``; nothing on SQLite).

    Only for a transaction that does nothing but lease (or renew) tasks. Its commit is
    still atomic and visible to every other transaction at once; only a crash of the
    database server itself within ~0.6 s (3 × ``wal_writer_delay``) can undo it, and an
    undone lease merely puts the task back to ``pending``: the holder's verdict is then
    refused (409) unless nobody else leased the task, no decision is lost or doubled, and
    a verdict's own synchronous commit flushes every earlier record of the log, the lease
    included. Saves one disk flush (median 7 ms, p99 24 ms measured on a loaded 2-core
    machine) on every lease. Never call it in a transaction that records a decision.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        session.info[RELAXED_COMMIT] = session.get_transaction()  # this transaction only


#: ``session.info`` key: this transaction's commit does not wait for the disk flush.
#: `backend.decisions.service.record_decisions` turns the flush back on if it is set.
RELAXED_COMMIT = "quorum.relaxed_commit"


@dataclass
class QueueRow:
    """A queue with its progress, counted from its tasks."""

    queue: Queue
    pending: int
    leased: int
    done: int = 0
    #: tasks moved to the crowd because moderators' day was full (`queues.overflow`)
    moved: int = 0

    @property
    def progress(self) -> str:
        return f"{self.done} / {self.queue.total}"


def list_queues(*, session: Session, day: date | None = None,
                kinds: set[str] | None = None, audience: str | None = None) -> list[QueueRow]:
    stmt = select(Queue).order_by(Queue.day.desc(), Queue.priority.desc(), Queue.kind,
                                  Queue.chunk)
    if day is not None:
        stmt = stmt.where(Queue.day == day)
    if audience is not None:
        stmt = stmt.where(Queue.audience == audience)
    queues = [q for q in session.scalars(stmt) if kinds is None or "*" in kinds
              or q.kind in kinds]
    counts: dict[tuple[int, str], int] = {}
    if queues:
        for qid, state, n in session.execute(
            select(Task.queue_id, Task.state, func.count()).where(
                Task.queue_id.in_([q.id for q in queues])).group_by(Task.queue_id, Task.state)):
            counts[(qid, state)] = n
    return [QueueRow(q, counts.get((q.id, "pending"), 0), counts.get((q.id, "leased"), 0),
                     counts.get((q.id, "done"), 0), counts.get((q.id, "overflow"), 0))
            for q in queues]


def queue_row(*, session: Session, queue: Queue) -> QueueRow:
    """One queue's progress."""
    counts = dict(session.execute(select(Task.state, func.count()).where(
        Task.queue_id == queue.id).group_by(Task.state)).tuples().all())
    return QueueRow(queue, counts.get("pending", 0), counts.get("leased", 0),
                    counts.get("done", 0), counts.get("overflow", 0))


def get_queue(*, session: Session, name: str) -> Queue:
    q = session.scalar(select(Queue).where(Queue.name == name))
    if q is None:
        raise NotFound(f"no queue named {name!r}")
    return q


def visible_kinds(user: User) -> set[str] | None:
    """The queue kinds ``user`` sees in queue lists: None = every kind (analysts and
    admins); a moderator sees the kinds granted to them."""
    return None if user.role in ("admin", "analyst") else user.granted_kinds


def _workable_kinds(user: User) -> set[str] | None:
    """None = every kind (admins and ``*`` grants)."""
    kinds = user.granted_kinds
    if user.role == "admin" or "*" in kinds:
        return None
    return kinds


# The lease path runs on every moderator request: its statements are built once (no
# per-call construction or cache-key work), with bound parameters.
_NOW = bindparam("now", type_=TZDateTime())
_EXPIRES = bindparam("expires", type_=TZDateTime())
_HELD = (
    select(Task)
    .where(Task.state == "leased", Task.lease_owner_id == bindparam("user_id"),
           Task.lease_expires_at >= _NOW,
           Task.task_type.in_(bindparam("task_types", expanding=True)))
    .order_by(Task.leased_at).limit(1).options(joinedload(Task.queue))
)
_HELD_IN_QUEUE = _HELD.where(Task.queue_id == bindparam("queue_id"))
_QUEUES_ALL = (
    select(Queue)
    .where(Queue.audience == "moderators", Queue.is_closed.is_(False))
    .where(exists().where(and_(Task.queue_id == Queue.id, Task.state == "pending")))
    .order_by(Queue.priority.desc(), Queue.day, Queue.chunk, Queue.id)
)
_QUEUES_ONE = _QUEUES_ALL.where(Queue.id == bindparam("queue_id"))
_QUEUES_OF_KINDS = _QUEUES_ALL.where(Queue.kind.in_(bindparam("kinds", expanding=True)))


def _take_next(*, lock: bool, by_value: bool = False) -> Any:
    order = (Task.confidence, Task.id) if by_value else (Task.id,)
    best = (
        select(Task.id)
        .where(Task.queue_id.in_(bindparam("queue_ids", expanding=True)),
               Task.state == "pending",
               Task.task_type.in_(bindparam("task_types", expanding=True)))
        .where(~exists().where(and_(TaskSkip.task_id == Task.id,
                                    TaskSkip.user_id == bindparam("user_id"))))
        .order_by(*order).limit(1)
    )
    if lock:  # concurrent moderators skip each other's row instead of waiting on it
        best = best.with_for_update(skip_locked=True)
    return _lease_best(best)


def _lease_best(best: Any) -> Any:
    """Lease the task ``best`` (a one-id SELECT) picks, in one round trip: ``UPDATE ...
    WHERE id = (best) AND state = 'pending' RETURNING``."""
    return (
        update(Task)
        .where(Task.id == best.scalar_subquery(), Task.state == "pending")
        .values(state="leased", lease_owner_id=bindparam("user_id"), leased_at=_NOW,
                lease_expires_at=_EXPIRES, lease_count=Task.lease_count + 1)
        .returning(Task)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


_TAKE = {(lock, by_value): _take_next(lock=lock, by_value=by_value)
         for lock in (False, True) for by_value in (False, True)}


def _take_next_of_tied(*, by_value: bool) -> Any:
    """PostgreSQL, for queues tied on (priority, day, chunk): the best pending task of
    each queue through its own index scan (``LATERAL ... LIMIT 1 FOR UPDATE SKIP
    LOCKED`` per queue id of the array), then the best of those few — instead of one
    ``queue_id IN (...)`` query that sorts every pending task of the group
    (`bench/lease_tied.py`: 3.6 → 1.3 ms at 7,550 pending in two queues). Locks at most
    one row per tied queue until the lease commits."""
    from sqlalchemy import Integer, true
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.orm import aliased

    qids = (func.unnest(bindparam("queue_ids", type_=ARRAY(Integer)))
            .table_valued("qid").render_derived(name="q"))
    t = aliased(Task, name="t")
    order = (t.confidence, t.id) if by_value else (t.id,)
    per_queue = (
        select(t.id, t.confidence)
        .where(t.queue_id == qids.c.qid, t.state == "pending",
               t.task_type.in_(bindparam("task_types", expanding=True)))
        .where(~exists().where(and_(TaskSkip.task_id == t.id,
                                    TaskSkip.user_id == bindparam("user_id"))))
        .order_by(*order).limit(1).with_for_update(skip_locked=True)
        .lateral("c")
    )
    best_order = ((per_queue.c.confidence, per_queue.c.id) if by_value
                  else (per_queue.c.id,))
    best = (select(per_queue.c.id).select_from(qids).join(per_queue, true())
            .order_by(*best_order).limit(1))
    return _lease_best(best)


_TAKE_TIED = {by_value: _take_next_of_tied(by_value=by_value) for by_value in (False, True)}


def lease_next(*, session: Session, user: User, now: datetime, settings: Settings,
               queue: Queue | None = None, lease_seconds: int | None = None,
               task_types: Sequence[str] = TASK_TYPES) -> Task | None:
    """Lease the next task for ``user``: highest priority queue first, then within it
    the task whose item's decision is likeliest to flip (the lowest ``Task.confidence``,
    the classifier's top probability when queued), oldest first
    among equals (``QUORUM_MODERATOR_ORDER=oldest``: oldest first).

    Idempotent: a moderator who already holds a live lease (in ``queue``, if given) gets
    that task back, so a retried request never takes a second task. ``task_types``
    limits what is offered (the web work view shows item cards only).
    """
    from backend.errors import Forbidden

    if queue is not None and not user.may_work(queue.kind):
        raise Forbidden(f"you may not work the queue {queue.name}")
    if queue is not None and queue.audience != "moderators":
        raise Forbidden(f"{queue.name} is worked by the crowd, not by moderators")
    expire_leases(session=session, now=now)
    types = list(task_types)
    task = session.scalar(_HELD_IN_QUEUE if queue is not None else _HELD,
                          {"user_id": user.id, "now": now, "task_types": types,
                           "queue_id": queue.id if queue is not None else None})
    if task is not None:
        return task

    # The queues first (few), best first; then the oldest task of the best queue that
    # has one, through the (queue_id, state, id) index. Same order as one query sorted
    # by (priority desc, day, chunk, task id), without sorting every pending task.
    # Queues that tie on (priority, day, chunk) are searched together (by task id).
    if queue is not None:
        found = session.scalars(_QUEUES_ONE, {"queue_id": queue.id})
    else:
        kinds = _workable_kinds(user)
        if kinds is None:
            found = session.scalars(_QUEUES_ALL)
        elif not kinds:
            return None
        else:
            found = session.scalars(_QUEUES_OF_KINDS, {"kinds": sorted(kinds)})
    groups: list[list[Queue]] = []
    last_key: tuple[Any, ...] | None = None
    for q in found:
        if (q.priority, q.day, q.chunk) != last_key:
            groups.append([])
            last_key = (q.priority, q.day, q.chunk)
        groups[-1].append(q)
    lock = session.get_bind().dialect.name == "postgresql"
    by_value = settings.moderator_order == "value"
    take = _TAKE[(lock, by_value)]
    params = {"user_id": user.id, "now": now, "task_types": types,
              "expires": now + timedelta(seconds=lease_seconds or settings.lease_seconds)}
    for group in groups:
        # Pick and lease in one round trip: UPDATE ... WHERE id = (best) RETURNING.
        stmt = _TAKE_TIED[by_value] if lock and len(group) > 1 else take
        task = session.scalars(stmt, {**params, "queue_ids": [q.id for q in group]}).first()
        if task is not None:
            by_id = {q.id: q for q in group}
            set_committed_value(task, "queue", by_id[task.queue_id])  # no lazy load later
            return task
    return None


def get_task(*, session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id, options=[joinedload(Task.queue)])
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    return task


def check_lease(*, task: Task, user: User, now: datetime) -> None:
    """Raise `LeaseLost` (409, with the reason) unless ``user`` may answer ``task`` now:
    they hold its lease, or their lease expired and nobody has leased the task since.

    A read-only check for showing a card; the verdict itself decides atomically
    (`finish_leased`), so a lease taken between this check and the verdict still wins.
    """
    _refuse_crowd(task)
    if task.state in ("leased", "pending") and task.lease_owner_id == user.id:
        return
    raise LeaseLost(_not_yours(task))


def _refuse_crowd(task: Task) -> None:
    if task.queue.audience != "moderators":
        raise LeaseLost(f"task {task.id} is in {task.queue.name}, a crowd queue: its items "
                        "(golden ones included) are answered only through the crowd")


def _not_yours(task: Task) -> str:
    if task.state == "done":
        return f"task {task.id} is already done"
    if task.state == "cancelled":
        return f"task {task.id} was cancelled"
    if task.state == "overflow":
        return (f"task {task.id} moved to the crowd: moderators' day was full "
                "(QUORUM_MODERATOR_DAILY_CAPACITY)")
    if task.state == "pending" and task.lease_owner_id is None:
        return (f"task {task.id} is not leased by anyone: lease it first "
                "(POST /api/v1/tasks/lease)")
    if task.state == "leased" and task.lease_owner_id is None:
        return f"task {task.id} is leased to the crowd"
    return (f"task {task.id} is not leased by you: your lease expired and someone else "
            "leased the task, or you never held it")


_FINISH = (
    update(Task)
    .where(Task.id == bindparam("task_id"), Task.lease_owner_id == bindparam("user_id"),
           Task.state.in_(("leased", "pending")))
    .values(state="done", done_at=_NOW, lease_expires_at=None)
    .returning(Task)
    .execution_options(synchronize_session=False, populate_existing=True)
)


def reopen_for_others(*, session: Session, task: Task, user: User, now: datetime) -> None:
    """Put a task ``user`` just finished back to ``pending`` for someone else (a pair task
    that wants more answers): one conditional UPDATE on ``done``, and a skip row so the
    lease never offers it to ``user`` again. The next lease is a new attempt."""
    reopened = session.execute(
        update(Task).where(Task.id == task.id, Task.state == "done")
        .values(state="pending", lease_owner_id=None, leased_at=None, lease_expires_at=None,
                done_at=None).execution_options(synchronize_session=False)).rowcount
    if reopened != 1:
        raise LeaseLost(f"task {task.id} changed while your answer was recorded; try again")
    already = session.scalar(select(TaskSkip.id).where(TaskSkip.task_id == task.id,
                                                       TaskSkip.user_id == user.id))
    if already is None:
        session.add(TaskSkip(task_id=task.id, user_id=user.id, created_at=now))
    session.flush()
    session.refresh(task)


def finish_leased(*, session: Session, task: Task, user: User, now: datetime) -> int:
    """Mark ``task`` done for ``user``'s verdict, atomically; return the attempt number.

    One ``UPDATE ... WHERE id = :id AND lease_owner_id = :me AND state IN ('leased',
    'pending') RETURNING``: ``pending`` with ``user`` as owner is their own expired lease
    that nobody has taken since. On PostgreSQL a concurrent verdict or lease on the same
    row waits for this one and then re-checks the condition, so exactly one of them wins;
    on SQLite every transaction holds the write lock from its start. Zero rows:
    `LeaseLost` with the reason, read from the row as it is now. The returned attempt is
    the task's ``lease_count`` (1 for the first lease, 2 after it was leased again, ...).
    """
    _refuse_crowd(task)
    done = session.scalar(_FINISH, {"task_id": task.id, "user_id": user.id, "now": now})
    if done is None:
        session.refresh(task)
        raise LeaseLost(_not_yours(task))
    return done.lease_count


def complete(*, session: Session, task: Task, now: datetime) -> None:
    task.state = "done"
    task.done_at = now
    task.lease_expires_at = None
    session.flush()


_RELEASE = (
    update(Task)
    .where(Task.id == bindparam("task_id"), Task.lease_owner_id == bindparam("user_id"),
           Task.state == "leased")
    .values(state="pending", lease_owner_id=None, leased_at=None, lease_expires_at=None)
    .returning(Task)
    .execution_options(synchronize_session=False, populate_existing=True)
)


def release(*, session: Session, task: Task, user: User, now: datetime,
            skip: bool = False) -> Task:
    """Give ``user``'s leased task back (atomically, like `finish_leased`); ``skip``: and
    never offer it to them again."""
    if session.scalar(_RELEASE, {"task_id": task.id, "user_id": user.id}) is None:
        session.refresh(task)
        raise LeaseLost(f"task {task.id} is not leased by you")
    if skip:
        already = session.scalar(select(TaskSkip.id).where(TaskSkip.task_id == task.id,
                                                           TaskSkip.user_id == user.id))
        if already is None:
            session.add(TaskSkip(task_id=task.id, user_id=user.id, created_at=now))
    session.flush()
    return task
