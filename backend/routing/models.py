"""Shadow outcomes: what an automatic stage would have decided where it may not decide.

A classifier band or a reuse distance that calibration has not backed at its target (or
that was calibrated for another model or encoder) runs in **shadow**: the item goes to
people, and one row here records what the stage would have decided, with the evidence.
Comparing these rows with the people's verdicts later shows how the shadow would have
done (``routing/shadow.py: shadow_agreement``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime


class ShadowOutcome(Base):
    __tablename__ = "shadow_outcomes"
    __table_args__ = (Index("ix_shadow_outcomes_item_id", "item_id"),
                      Index("ix_shadow_outcomes_created_at", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    #: ``classifier`` | ``similarity``
    source: Mapped[str] = mapped_column(String(20))
    #: the label it would have decided
    label: Mapped[str] = mapped_column(String(50))
    #: the band that would have decided (``auto_ok``, ``ML_BAD_HIGH``, ``reuse``)
    band: Mapped[str] = mapped_column(String(50))
    probability: Mapped[float | None] = mapped_column(Float)
    distance: Mapped[float | None] = mapped_column(Float)
    similar_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="SET NULL"))
    model_id: Mapped[str | None] = mapped_column(String(200))
    encoder_id: Mapped[str | None] = mapped_column(String(200))
    threshold_set_version: Mapped[int | None]
    #: why it did not decide, in a sentence
    reason: Mapped[str] = mapped_column(Text)
    #: the queue kind the item went to instead (None: a later stage decided it)
    routed_to: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
