from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session, joinedload

from backend.db import utcnow
from backend.deps import CurrentUser, ModeratorTxn, ModeratorUser, SessionDep
from backend.errors import Forbidden
from backend.items.schemas import ItemRead
from backend.limits import IdPath
from backend.policy import get_policy
from backend.queues import service, work
from backend.queues.models import Task
from backend.queues.schemas import (
    CapacityRead,
    LeaseRequest,
    LeaseResponse,
    QueueRead,
    TaskRead,
    VerdictRequest,
    VerdictResponse,
)
from backend.settings import get_settings
from backend.users.models import User

router = APIRouter(prefix="/api/v1", tags=["queues"])


def queue_read(row: service.QueueRow) -> QueueRead:
    q = row.queue
    return QueueRead(name=q.name, kind=q.kind, day=q.day, chunk=q.chunk, priority=q.priority,
                     audience=q.audience, total=q.total, done=row.done, pending=row.pending,
                     leased=row.leased, moved_to_crowd=row.moved, progress=row.progress)


def task_read(task: Task) -> TaskRead:
    return TaskRead(id=task.id, queue=task.queue.name, queue_kind=task.queue.kind,
                    task_type=task.task_type, state=task.state, item_id=task.item_id,
                    payload=task.payload, leased_at=task.leased_at,
                    lease_expires_at=task.lease_expires_at)


@router.get("/queues", response_model=list[QueueRead])
def list_queues(session: SessionDep, user: CurrentUser,
                day: date | None = Query(None, description="default: every day")
                ) -> list[QueueRead]:
    """Queues; a moderator sees only the kinds they are granted."""
    return [queue_read(r) for r in service.list_queues(
        session=session, day=day, kinds=service.visible_kinds(user))]


@router.get("/queues/capacity", response_model=CapacityRead)
def moderator_capacity(session: SessionDep, user: CurrentUser) -> CapacityRead:
    """Moderators' day against their daily capacity: done, held, waiting, the room left
    for the kinds that may overflow, and what moved to the crowd today."""
    from backend.queues.overflow import capacity

    settings = get_settings()
    c = capacity(session=session, settings=settings, now=utcnow())
    return CapacityRead(capacity=c.capacity, done_today=c.done_today, held=c.held,
                        fixed_pending=c.fixed_pending,
                        overflowable_pending=c.overflowable_pending,
                        room=c.room if c.capacity else 0, moved_today=c.moved_today,
                        overflow_from=list(settings.moderator_overflow_from),
                        overflow_kind=settings.moderator_overflow_kind)


def _owned_task(session: SessionDep, task_id: int, user: User) -> Task:
    task = service.get_task(session=session, task_id=task_id)
    if not user.may_work(task.queue.kind):
        raise Forbidden(f"you may not work the queue {task.queue.name}")
    return task


@router.post("/tasks/lease", response_model=LeaseResponse)
async def lease(txn: ModeratorTxn, body: LeaseRequest | None = None) -> LeaseResponse:
    """Lease the next task from the highest-priority queue you may work."""
    body = body or LeaseRequest()

    def run(session: Session, user: User) -> LeaseResponse:
        service.relax_commit_flush(session)  # a lease-only transaction (see its docstring)
        queue = service.get_queue(session=session, name=body.queue) if body.queue else None
        task = service.lease_next(session=session, user=user, now=utcnow(),
                                  settings=get_settings(), queue=queue,
                                  lease_seconds=body.lease_seconds)
        if task is None:
            return LeaseResponse(task=None,
                                 message="no task waiting in the queues you may work")
        from backend.items.models import Item

        item = session.get(Item, task.item_id, options=[joinedload(Item.tags)])
        return LeaseResponse(task=task_read(task),
                             item=ItemRead.model_validate(item).model_dump(mode="json"))

    return await txn.run(run)


@router.post("/tasks/{task_id}/verdict", response_model=VerdictResponse)
async def verdict(task_id: IdPath, body: VerdictRequest, txn: ModeratorTxn) -> VerdictResponse:
    def run(session: Session, user: User) -> VerdictResponse:
        task = _owned_task(session, task_id, user)  # held: submit_verdict finds it
        res = work.submit_verdict(session=session, task_id=task_id, user=user,
                                  label=body.label, policy=get_policy(), now=utcnow(),
                                  comment=body.comment, time_spent_ms=body.time_spent_ms)
        return VerdictResponse(task_id=task.id, item_id=task.item_id, label=body.label,
                               event_id=res.event_id, judgment_id=res.judgment_id,
                               replayed=res.replayed)

    return await txn.run(run)


@router.post("/tasks/{task_id}/skip", response_model=TaskRead)
def skip(task_id: IdPath, session: SessionDep, user: ModeratorUser) -> TaskRead:
    """Give the task back and never get it offered again."""
    task = _owned_task(session, task_id, user)
    return task_read(service.release(session=session, task=task, user=user, now=utcnow(),
                                     skip=True))


@router.post("/tasks/{task_id}/release", response_model=TaskRead)
def release(task_id: IdPath, session: SessionDep, user: ModeratorUser) -> TaskRead:
    """Give the task back to its queue (someone else, or you, may take it)."""
    task = _owned_task(session, task_id, user)
    return task_read(service.release(session=session, task=task, user=user, now=utcnow()))
