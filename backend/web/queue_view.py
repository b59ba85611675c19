"""A queue's contents for the web: which items wait, who holds which, what is done —
searchable and paged. Read-only; analysts and admins see every queue, a moderator the
queues granted to them. Keyword-only, typed, no ``Request``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from backend.decisions.models import ItemStatus
from backend.errors import Forbidden, ValidationFailed
from backend.items.models import Item
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from backend.users.models import User

PAGE_MAX = 200
STATES = ("pending", "leased", "done", "overflow")


def viewable_queue(*, session: Session, user: User, name: str) -> Queue:
    """The queue ``name`` if this user may see it (analysts and admins: every queue)."""
    queue = queues.get_queue(session=session, name=name)
    if user.role not in ("analyst", "admin") and not user.may_work(queue.kind):
        raise Forbidden(f"you may not see the queue {queue.name}")
    return queue


@dataclass
class QueueEntry:
    task_id: int
    item_id: int
    title: str
    source: str
    external_id: str
    seller_id: str | None
    state: str
    holder: str | None
    lease_expires_at: datetime | None
    label: str | None
    decided_by: str | None


@dataclass
class QueueContents:
    entries: list[QueueEntry]
    next_after: int | None


def queue_contents(*, session: Session, queue: Queue, q: str = "", state: str = "",
                   after: int | None = None, limit: int = 50) -> QueueContents:
    """One page of the queue's tasks in task order: text search over title, external id and
    seller (case-insensitive substring), optional state filter, keyset paging on the task."""
    if state and state not in STATES:
        raise ValidationFailed(f"state must be one of {', '.join(STATES)}")
    limit = max(1, min(int(limit), PAGE_MAX))
    stmt = (select(Task, Item.title, Item.source, Item.external_id, Item.seller_id,
                   User.username, ItemStatus.label, ItemStatus.source)
            .join(Item, Item.id == Task.item_id)
            .outerjoin(User, User.id == Task.lease_owner_id)
            .outerjoin(ItemStatus, ItemStatus.item_id == Task.item_id)
            .where(Task.queue_id == queue.id).order_by(Task.id).limit(limit + 1))
    if after is not None:
        stmt = stmt.where(Task.id > after)
    if state:
        stmt = stmt.where(Task.state == state)
    text = q.strip()
    if text:  # autoescape: % and _ are plain characters
        needle = text.lower()
        stmt = stmt.where(or_(func.lower(Item.title).contains(needle, autoescape=True),
                              func.lower(Item.external_id).contains(needle, autoescape=True),
                              func.lower(Item.seller_id).contains(needle, autoescape=True)))
    rows = session.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [QueueEntry(task_id=t.id, item_id=t.item_id, title=title or "", source=source,
                          external_id=ext, seller_id=seller, state=t.state,
                          holder=holder if t.state == "leased" else None,
                          lease_expires_at=t.lease_expires_at if t.state == "leased" else None,
                          label=label if t.state == "done" else None,
                          decided_by=decided if t.state == "done" else None)
               for t, title, source, ext, seller, holder, label, decided in rows]
    return QueueContents(entries=entries, next_after=rows[-1][0].id if more and rows else None)
