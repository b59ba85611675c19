from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

if TYPE_CHECKING:
    from backend.decisions.models import ItemStatus


class Item(Base):
    """Something to moderate. ``(source, external_id)`` is the natural key."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(3))
    seller_id: Mapped[str | None] = mapped_column(String(200), index=True)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    gmv: Mapped[float | None] = mapped_column(Float)
    exposure: Mapped[float | None] = mapped_column(Float)
    is_new: Mapped[bool] = mapped_column(default=False)
    is_golden: Mapped[bool] = mapped_column(default=False)
    golden_label: Mapped[str | None] = mapped_column(String(50))
    safety_score: Mapped[float | None] = mapped_column(Float)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    status: Mapped[ItemStatus | None] = relationship(
        "ItemStatus", uselist=False, back_populates="item", lazy="joined"
    )
    tags: Mapped[list[ItemTag]] = relationship(cascade="all, delete-orphan")


class ItemTag(Base):
    __tablename__ = "item_tags"
    __table_args__ = (UniqueConstraint("item_id", "tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(100))
    source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ItemScore(Base):
    """A model's scores for an item and the band they fell in (history, newest wins)."""

    __tablename__ = "item_scores"
    __table_args__ = (Index("ix_item_scores_item_id_created_at", "item_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(String(200))
    threshold_set_version: Mapped[int | None]
    scores: Mapped[dict[str, float]] = mapped_column(JSONType)
    band: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ItemEmbedding(Base):
    """An item's vector for one encoder (float32 bytes, L2-normalised)."""

    __tablename__ = "item_embeddings"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    encoder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dim: Mapped[int]
    vector: Mapped[bytes]
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
