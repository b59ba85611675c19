"""The append-only decision log and the status derived from it (same transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

#: Where a decision came from. Human sources supersede automatic ones.
AUTOMATIC_SOURCES = ("rule", "hash", "similarity", "classifier")
HUMAN_SOURCES = ("moderator", "crowd", "import")
SOURCES = AUTOMATIC_SOURCES + HUMAN_SOURCES


class DecisionEvent(Base):
    """One decision about an item. Rows are never updated or deleted."""

    __tablename__ = "decision_events"
    __table_args__ = (
        Index("ix_decision_events_item_id_id", "item_id", "id"),
        Index("ix_decision_events_created_at", "created_at"),
        # At most one human decision per task attempt (see backend.queues.service).
        Index("uq_decision_events_task_id_task_attempt", "task_id", "task_attempt",
              unique=True, postgresql_where=text("task_attempt IS NOT NULL"),
              sqlite_where=text("task_attempt IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="RESTRICT"))
    label: Mapped[str] = mapped_column(String(50))
    source: Mapped[str] = mapped_column(String(20))
    is_human: Mapped[bool] = mapped_column(default=False)
    # provenance (whichever applies to the source)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    rule_version: Mapped[int | None]
    model_id: Mapped[str | None] = mapped_column(String(200))
    threshold_set_version: Mapped[int | None]
    similar_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="SET NULL")
    )
    distance: Mapped[float | None] = mapped_column(Float)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    #: A moderator's verdict: the task's lease count when it was answered (its attempt).
    task_attempt: Mapped[int | None]
    crowd_pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("crowd_pools.id", ondelete="SET NULL")
    )
    aggregation_method: Mapped[str | None] = mapped_column(String(50))
    confidence: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: Replay provenance of automatic decisions: the item's content hash when decided, the
    #: policy (``name:version``) and the inputs that decided it (scores, neighbours).
    content_hash: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[str | None] = mapped_column(String(120))
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: The decision this one overrides (the item's previous current decision).
    supersedes_id: Mapped[int | None] = mapped_column(
        ForeignKey("decision_events.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ItemStatus(Base):
    """The current state of an item, derived from its events and its queue tasks.

    ``state``: ``received`` (ingested, routing not finished), ``queued`` (waiting for people),
    ``decided`` (has a current decision; may still be queued for a spot check).
    """

    __tablename__ = "item_status"
    __table_args__ = (Index("ix_item_status_state_label", "state", "label"),)

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20), default="received")
    label: Mapped[str | None] = mapped_column(String(50))
    source: Mapped[str | None] = mapped_column(String(20))
    is_human: Mapped[bool] = mapped_column(default=False)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("decision_events.id", ondelete="SET NULL")
    )
    queue_kind: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    item = relationship("Item", back_populates="status")
