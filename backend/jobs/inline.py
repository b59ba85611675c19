"""The embedded default's dispatcher: the same tasks, in-process (SQLite).

There is no job table on SQLite: an item's ``received`` state is its routing job. The
worker (a thread in ``quorum serve``, the foreground of ``quorum worker``) routes the
backlog in batches and runs the periodic tasks on their crons; SQLite's single writer
makes every batch one atomic transaction, and a crash loses nothing (the items are still
``received`` when it starts again).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from croniter import croniter

from backend.db import get_sessionmaker, utcnow
from backend.jobs import stages, tasks
from backend.jobs.settings import JobSettings, get_job_settings
from backend.settings import Settings, get_settings

log = logging.getLogger("quorum.jobs")
_wake = threading.Event()


def notify() -> None:
    """Wake the in-process worker now (ingest calls this after its commit)."""
    _wake.set()


class InlineWorker:
    def __init__(self, *, settings: Settings | None = None, js: JobSettings | None = None,
                 periodic: bool = True) -> None:
        self.settings = settings or get_settings()
        self.js = js or get_job_settings()
        self.sessions = get_sessionmaker(self.settings.resolved_database_url)
        now = utcnow()
        self.due: dict[str, datetime] = {}
        if periodic:
            for p in tasks.PERIODIC:
                if p.enabled(self.js):
                    self.due[p.name] = croniter(p.cron(self.js), now).get_next(datetime)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def route_once(self) -> int:
        """Route one batch of the backlog; returns how many items."""
        s = stages.route_backlog(sessions=self.sessions, settings=self.settings,
                                 batch_size=self.js.route_batch_size, max_batches=1)
        return s.items

    def run_due(self, now: datetime | None = None) -> list[str]:
        """Run the periodic tasks whose time has come (a failure is recorded and logged)."""
        now = now or utcnow()
        ran = []
        for p in tasks.PERIODIC:
            at = self.due.get(p.name)
            if at is None or at > now:
                continue
            try:
                tasks.RUNNERS[p.name]()
            except Exception:
                log.exception("periodic task %s failed", p.name)
            self.due[p.name] = croniter(p.cron(self.js), utcnow()).get_next(datetime)
            ran.append(p.name)
        return ran

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.route_once() > 0
                self.run_due()
            except Exception:
                log.exception("in-process worker pass failed")
                busy = False
            if not busy:
                _wake.wait(self.js.inline_poll_seconds)
                _wake.clear()

    def start(self) -> InlineWorker:
        self._thread = threading.Thread(target=self.run, name="quorum-inline-worker",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        _wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


_started: InlineWorker | None = None


def start_if_enabled() -> InlineWorker | None:
    """Start the in-process worker thread (once per process) when
    ``QUORUM_JOBS_INLINE_WORKER`` is on and the database is SQLite (``quorum serve``)."""
    global _started
    settings = get_settings()
    if _started is None and get_job_settings().inline_worker and \
            settings.resolved_database_url.startswith("sqlite"):
        _started = InlineWorker(settings=settings).start()
    return _started
