"""Appeals against decisions (opened by the platform on behalf of a seller or a user)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import TZDateTime

#: ``open`` (waiting in the APPEALS queue) → ``upheld`` (the decision stands) or
#: ``reversed`` (a new decision with another label supersedes it).
APPEAL_STATES = ("open", "upheld", "reversed")


class Appeal(Base):
    __tablename__ = "appeals"
    __table_args__ = (
        # the platform's own id for the appeal makes opening it idempotent
        UniqueConstraint("item_id", "external_ref"),
        # at most one open appeal per item
        Index("uq_appeals_item_id_open", "item_id", unique=True,
              postgresql_where=text("state = 'open'"), sqlite_where=text("state = 'open'")),
        Index("ix_appeals_state_created_at", "state", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="RESTRICT"))
    #: the decision appealed against (the item's current decision when the appeal opened)
    event_id: Mapped[int] = mapped_column(ForeignKey("decision_events.id", ondelete="RESTRICT"))
    state: Mapped[str] = mapped_column(String(10), default="open")
    reason: Mapped[str] = mapped_column(Text, default="")
    appellant: Mapped[str | None] = mapped_column(String(200))
    external_ref: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    #: the decision that ended the appeal (same label: upheld; another: reversed)
    outcome_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("decision_events.id", ondelete="SET NULL"))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    outcome_reasons: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(TZDateTime())
