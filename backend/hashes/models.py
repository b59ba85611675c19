"""Hash banks of known images (PDQ), the items' own image hashes, and the calibrated
Hamming distances that let them decide.

- ``HashBank``: a named list of PDQ hashes with a label (e.g. known-bad images,
  ``prohibited``) and what a match does: ``decide`` the label (only while the bank's
  distance is backed by calibration; in shadow until then) or ``route`` to a queue;
- ``BankHash``: one banked hash (64 hex digits) with an optional external reference;
- ``ItemHash``: an item's image hash, computed once per content hash;
- ``HashDistance``: a calibrated Hamming distance and the evidence behind it, per bank
  (``bank:<name>``) and for image reuse of past verdicts (``pdq_reuse``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

BANK_ACTIONS = ("decide", "route")
REUSE_KEY = "pdq_reuse"


def bank_key(name: str) -> str:
    return f"bank:{name}"


class HashBank(Base):
    __tablename__ = "hash_banks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    label: Mapped[str] = mapped_column(String(50))
    #: ``decide`` (the label, when the bank's distance is backed) | ``route``
    action: Mapped[str] = mapped_column(String(10), default="decide")
    #: the queue kind matches go to (route, or decide while in shadow); None: HASH_MATCH
    queue_kind: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class BankHash(Base):
    __tablename__ = "bank_hashes"
    __table_args__ = (UniqueConstraint("bank_id", "hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("hash_banks.id", ondelete="CASCADE"),
                                         index=True)
    #: PDQ hash, 64 lower-case hex digits
    hash: Mapped[str] = mapped_column(String(64))
    #: where it came from (an external id, a case number)
    ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ItemHash(Base):
    __tablename__ = "item_hashes"
    __table_args__ = (Index("ix_item_hashes_hash", "hash"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"),
                                         primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int] = mapped_column(Integer)
    #: the item's content hash the image hash was computed for (recomputed on change)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class HashDistance(Base):
    __tablename__ = "hash_distances"

    #: ``bank:<name>`` or ``pdq_reuse``
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    distance: Mapped[int] = mapped_column(Integer)
    #: the calibration evidence (threshold, backed, lower bound, labels, target, when)
    backing: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
