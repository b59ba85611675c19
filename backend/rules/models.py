from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

ACTIONS = ("decide", "route", "tag")
#: The life cycle: ``draft`` (never evaluated) → ``shadow`` (evaluated, hits recorded, never
#: acts) → ``active`` (live: acts). ``off``: not evaluated. A rule reaches ``active`` only by
#: promotion after a dry run of its current version (``service.promote``).
MODES = ("draft", "shadow", "active", "off")
#: The modes routing evaluates.
EVALUATED_MODES = ("shadow", "active")
RUN_KINDS = ("backtest", "dry_run")


class Rule(Base):
    """A named condition (CEL) with an action. ``version`` grows with every change."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer, default=100)
    description: Mapped[str | None] = mapped_column(Text)
    expression: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(10))
    label: Mapped[str | None] = mapped_column(String(50))
    queue_kind: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int | None]
    tag: Mapped[str | None] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(10), default="active")
    hits: Mapped[int] = mapped_column(Integer, default=0)
    shadow_hits: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class RuleVersion(Base):
    """A snapshot of a rule's definition at each version (rules are versioned data)."""

    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    version: Mapped[int]
    definition: Mapped[dict] = mapped_column(JSONType)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class RuleHit(Base):
    """A rule matched an item (active or shadow)."""

    __tablename__ = "rule_hits"
    __table_args__ = (Index("ix_rule_hits_rule_id_item_id", "rule_id", "item_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    rule_version: Mapped[int]
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class RuleRun(Base):
    """A backtest or a dry run of one version of a rule: what it would hit, stored so that a
    page can show it after a redirect and a promotion can point at the dry run it rests on."""

    __tablename__ = "rule_runs"
    __table_args__ = (Index("ix_rule_runs_rule_id_created_at", "rule_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    rule_version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(10))
    items_scanned: Mapped[int]
    hits: Mapped[int]
    result: Mapped[dict] = mapped_column(JSONType)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
