"""Job runs: each periodic task (or unit of one) records its start, end, outcome and a
small summary, in transactions of its own, so ``quorum jobs`` and the admin page show the
last run of every task even while one is running or after one crashed."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from backend.db import transaction, utcnow
from backend.errors import Conflict
from backend.jobs.models import JobRun

WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Deadline:
    """A cooperative timeout: a periodic task checks ``expired`` between its steps and
    leaves the rest for its next run (a thread cannot be killed mid-statement)."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.started > self.seconds


@dataclass
class RunRecord:
    run_id: int
    deadline: Deadline
    detail: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False


class AlreadyRunning(Conflict):
    """Another run of the same task and key is in progress (and within its timeout)."""


@contextmanager
def track(*, sessions: sessionmaker[Session], name: str, key: str = "",
          timeout_s: float, exclusive: bool = True) -> Iterator[RunRecord]:
    """Record one run of ``name``: ``ok`` when the block returns, ``timeout`` when it set
    ``timed_out``, ``failed`` (with the error) when it raises; the error propagates.

    ``exclusive``: refuse (``AlreadyRunning``) while another run of ``(name, key)``
    started less than ``timeout_s`` ago is still ``running``, whoever started it (a
    worker, a second API process's thread, a person typing ``quorum crowd sync``). The
    check and the new row are one transaction: PostgreSQL serialises it with an advisory
    lock on the name and key, SQLite with its write lock. A run whose process died stops
    counting once its timeout has passed."""
    with transaction(sessions) as session:
        now = utcnow()
        if exclusive:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                {"k": f"quorum.run:{name}:{key}"})
            busy = session.scalar(select(JobRun.id).where(
                JobRun.name == name, JobRun.key == key, JobRun.outcome == "running",
                JobRun.started_at > now - timedelta(seconds=timeout_s)).limit(1))
            if busy is not None:
                raise AlreadyRunning(f"{name} {key} is already running (run {busy})".strip())
        run = JobRun(name=name, key=key, outcome="running", worker=WORKER, started_at=now)
        session.add(run)
        session.flush()
        record = RunRecord(run_id=run.id, deadline=Deadline(timeout_s))
    try:
        yield record
    except BaseException as exc:
        _finish(sessions, record, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _finish(sessions, record, "timeout" if record.timed_out else "ok")


def _finish(sessions: sessionmaker[Session], record: RunRecord, outcome: str,
            error: str | None = None) -> None:
    with transaction(sessions) as session:
        session.execute(update(JobRun).where(JobRun.id == record.run_id).values(
            outcome=outcome, error=error, detail=record.detail or None, finished_at=utcnow()))


@dataclass
class LastRun:
    name: str
    key: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any] | None
    error: str | None
    worker: str
    runs: int


def last_runs(*, session: Session) -> list[LastRun]:
    """The latest run of every (task, key), newest first, with how often it ran."""
    latest = (select(JobRun.name, JobRun.key, func.max(JobRun.id).label("id"),
                     func.count().label("runs"))
              .group_by(JobRun.name, JobRun.key).subquery())
    rows = session.execute(select(JobRun, latest.c.runs).join(latest, JobRun.id == latest.c.id)
                           .order_by(JobRun.name, JobRun.key)).all()
    return [LastRun(name=r.name, key=r.key, outcome=r.outcome, started_at=r.started_at,
                    finished_at=r.finished_at, detail=r.detail, error=r.error,
                    worker=r.worker, runs=n) for r, n in rows]


def runs_of(*, session: Session, name: str, key: str | None = None,
            limit: int = 100) -> list[JobRun]:
    stmt = select(JobRun).where(JobRun.name == name)
    if key is not None:
        stmt = stmt.where(JobRun.key == key)
    return list(session.scalars(stmt.order_by(JobRun.id.desc()).limit(limit)))
