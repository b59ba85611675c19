"""Decisions delivered: the feed (a per-commit sequence over decision events), webhook
subscriptions and one delivery row per (subscription, event)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime


class FeedEntry(Base):
    """A decision event's place in the feed. ``seq`` is given in commit order by one
    sequencer at a time (see ``deliveries.service.sequence_feed``): a reader paging by
    ``seq`` never misses an event that committed late with a lower event id."""

    __tablename__ = "decision_feed"
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("decision_events.id", ondelete="CASCADE"), unique=True)
    fed_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: HMAC-SHA256 key of the ``X-Quorum-Signature`` header (shown once on creation).
    secret: Mapped[str] = mapped_column(String(200))
    #: Only events of these item sources / decision labels (empty list: all).
    sources: Mapped[list[str]] = mapped_column(JSONType, default=list)
    labels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event to one subscription: ``pending`` → ``delivered``, or ``dead`` after
    ``max_attempts`` (the dead-letter list; an admin may replay it)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("decision_events.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TZDateTime())
