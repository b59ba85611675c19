from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime


class Judgment(Base):
    """One human answer about an item: a moderator's verdict or one crowd worker's answer.

    Crowd answers are idempotent on ``(assignment_id, item_id)``.
    """

    __tablename__ = "judgments"
    __table_args__ = (
        UniqueConstraint("assignment_id", "item_id"),
        Index("ix_judgments_item_id", "item_id"),
        # A moderator's verdict: one judgment per task attempt (see backend.queues.service).
        Index("uq_judgments_task_id_task_attempt", "task_id", "task_attempt", unique=True,
              postgresql_where=text("task_attempt IS NOT NULL"),
              sqlite_where=text("task_attempt IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    #: A moderator's verdict: the task's lease count when it was answered (its attempt).
    task_attempt: Mapped[int | None]
    worker_kind: Mapped[str] = mapped_column(String(20))  # moderator | crowd
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    worker_id: Mapped[str | None] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(50))
    time_spent_ms: Mapped[int | None] = mapped_column(Integer)
    is_golden: Mapped[bool] = mapped_column(default=False)
    golden_label: Mapped[str | None] = mapped_column(String(50))
    comment: Mapped[str | None] = mapped_column(Text)
    crowd_pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("crowd_pools.id", ondelete="SET NULL")
    )
    assignment_id: Mapped[str | None] = mapped_column(String(100))
    #: Crowd answers: the review verdict of the assignment (SUBMITTED/ACCEPTED/REJECTED).
    assignment_status: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class CrowdPool(Base):
    """Our record of a Toloka pool made from a queue.

    ``state`` walks ``intent`` → ``project_created`` → ``pool_created`` →
    ``tasks_uploaded`` → ``open`` → ``closed``; each step is committed before the next
    remote call so that a retry after a crash reconciles instead of duplicating.
    """

    __tablename__ = "crowd_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20), default="item")  # item | pair
    state: Mapped[str] = mapped_column(String(30), default="intent")
    toloka_project_id: Mapped[str | None] = mapped_column(String(50))
    toloka_pool_id: Mapped[str | None] = mapped_column(String(50), unique=True)
    toloka_training_id: Mapped[str | None] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    aggregation_method: Mapped[str] = mapped_column(String(50), default="MajorityVote")
    task_count: Mapped[int] = mapped_column(Integer, default=0)
    answers_count: Mapped[int] = mapped_column(Integer, default=0)
    spend: Mapped[float] = mapped_column(Float, default=0.0)
    #: Pull cursor: the last assignment id seen (ids grow monotonically).
    last_assignment_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class CrowdTask(Base):
    """An item (or pair) pushed to a pool as a Toloka task."""

    __tablename__ = "crowd_tasks"
    __table_args__ = (UniqueConstraint("pool_id", "item_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("crowd_pools.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    toloka_task_id: Mapped[str | None] = mapped_column(String(50))
    is_golden: Mapped[bool] = mapped_column(default=False)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    aggregated: Mapped[bool] = mapped_column(default=False)
    #: How the item left the pool: ``decided`` (crowd decision), ``moderators`` (no
    #: agreement at the maximum overlap), ``control`` (a golden task); None while open.
    outcome: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class CrowdStoreEntry(Base):
    """crowd's ``Store`` on our database (`backend.crowdwork.store.DbStore`): what a push
    recorded before and after each Toloka call, one JSON object per key."""

    __tablename__ = "crowd_store"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class GoldenItem(Base):
    """The golden set's life cycle (`backend.crowdwork.gold`): where a golden item came from
    and whether it is still used as a control task. A golden item without a row is an
    ingested one that is active; a retired one is never mixed into a pool again (it was
    shown too often: workers could have memorised it)."""

    __tablename__ = "golden_items"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"),
                                         primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="active")  # active | retired
    #: ``ingest`` (came golden), ``moderator_crowd`` (a moderator decided it and the crowd's
    #: majority agreed), ``two_moderators`` (two moderators decided it the same way).
    source: Mapped[str] = mapped_column(String(30), default="ingest")
    label: Mapped[str | None] = mapped_column(String(50))
    #: Crowd control answers on it when it was retired, and why.
    exposures: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
