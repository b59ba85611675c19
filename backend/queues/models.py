from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

#: ``overflow``: moved to the crowd because moderators' day was full (`queues.overflow`)
TASK_STATES = ("pending", "leased", "done", "cancelled", "overflow")
AUDIENCES = ("moderators", "crowd")
#: ``item``: judge an item; ``pair``: do two items deserve the same decision?
TASK_TYPES = ("item", "pair")


class Queue(Base):
    """A daily queue ``KIND_YYYY-MM-DD[_n]`` with a priority and an audience."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("kind", "day", "chunk"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    chunk: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer)
    audience: Mapped[str] = mapped_column(String(20), default="moderators")
    #: Tasks ever put in this chunk (caps it at ``queue_chunk_size``). Progress — how many
    #: are done — is counted from the tasks, not kept here: a counter every verdict bumps
    #: would be one row all moderators' transactions queue on.
    total: Mapped[int] = mapped_column(Integer, default=0)
    is_closed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Task(Base):
    """One unit of human work on an item in a queue.

    ``pending`` → ``leased`` (owner + deadline) → ``done``; an expired lease puts the
    task back to ``pending``. ``task_type`` is ``item`` (judge an item) or ``pair``
    (judge whether two items deserve the same decision; ``payload`` names the other).
    """

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("queue_id", "item_id", "task_type"),
        Index("ix_tasks_queue_id_state_id", "queue_id", "state", "id"),
        Index("ix_tasks_state_lease_expires_at", "state", "lease_expires_at"),
        Index("ix_tasks_queue_id_state_confidence_id", "queue_id", "state", "confidence", "id"),
        #: today's done / moved tasks for the moderators' capacity (`queues.overflow`)
        Index("ix_tasks_state_done_at", "state", "done_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    task_type: Mapped[str] = mapped_column(String(10), default="item")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    lease_owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    leased_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    lease_count: Mapped[int] = mapped_column(Integer, default=0)
    #: The classifier's top probability for the item when queued (0.5 never scored):
    #: moderators lease the least sure first, i.e. the likeliest to flip (``lease_next``).
    confidence: Mapped[float] = mapped_column(Float, default=0.5,
                                              server_default=text("0.5"))
    done_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    queue: Mapped[Queue] = relationship()


class TaskSkip(Base):
    """A moderator skipped this task; it is not offered to them again."""

    __tablename__ = "task_skips"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
