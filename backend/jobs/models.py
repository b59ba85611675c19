"""What the scheduled work did: one row per run of a periodic task (or of one unit of it,
e.g. one crowd pool's pull), read by ``quorum jobs`` and the admin page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_name_started_at", "name", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The task (``expire_leases``, ``crowd_sync``, ``crowd_pull``, ...).
    name: Mapped[str] = mapped_column(String(100))
    #: What it ran on, when it runs per unit (``pool:12``); else empty.
    key: Mapped[str] = mapped_column(String(200), default="")
    #: ``running``, ``ok``, ``failed`` or ``timeout`` (stopped at its deadline).
    outcome: Mapped[str] = mapped_column(String(20), default="running")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    #: ``host:pid`` of the process that ran it.
    worker: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime())
