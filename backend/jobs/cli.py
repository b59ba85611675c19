"""``quorum serve``, ``quorum worker``, ``quorum jobs`` and ``quorum crowd sync``."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True, width=120)


def _settings():  # noqa: ANN202
    from backend.migrate import upgrade
    from backend.settings import get_settings

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return settings


def serve(host: str = "127.0.0.1", port: int = 8000,
          workers: Annotated[int, typer.Option(help="worker processes")] = 1) -> None:
    """Run the API and web UI (uvicorn). Refuses to start without a secret key of at
    least 32 bytes (QUORUM_SECRET_KEY, or the file <data dir>/secret_key). On SQLite each
    process also runs the in-process worker thread (routing of received items, the periodic
    tasks)."""
    import uvicorn

    from backend.settings import get_settings
    from backend.web.security import require_secret_key

    require_secret_key(get_settings())  # before touching the database
    settings = _settings()
    if settings.resolved_database_url.startswith("sqlite"):
        os.environ.setdefault("QUORUM_JOBS_INLINE_WORKER", "true")
    uvicorn.run("backend.asgi:app", host=host, port=port, workers=workers, log_level="info")


def worker(
    queues: Annotated[str | None, typer.Option(
        help="comma-separated queues to work: embed, periodic, crowd, deliver "
             "(default: all)")] = None,
    concurrency: Annotated[int | None, typer.Option(
        help="jobs run at the same time (default QUORUM_JOBS_WORKER_CONCURRENCY)")] = None,
    name: Annotated[str | None, typer.Option(help="worker name shown in the job tables")
                    ] = None,
) -> None:
    """Run a job worker until stopped (SIGTERM lets running jobs finish). PostgreSQL: the
    procrastinate worker (scale out by starting more). SQLite: the in-process loop."""
    import logging

    from backend.errors import ValidationFailed
    from backend.jobs.settings import get_job_settings
    from backend.jobs.tasks import QUEUES

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    chosen = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    unknown = sorted(set(chosen or ()) - set(QUEUES))
    if unknown:
        raise ValidationFailed(f"unknown queue(s) {', '.join(unknown)}; use some of "
                               f"{', '.join(QUEUES)}")
    if chosen is None or "embed" in chosen:
        from backend.jobs.stages import warm_embed_worker

        t0 = time.perf_counter()
        encoder_id = warm_embed_worker()
        if encoder_id:
            console.print(f"embed: encoder {encoder_id} loaded in "
                          f"{time.perf_counter() - t0:.1f} s")
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        from backend.jobs.inline import InlineWorker

        console.print("SQLite: running the in-process worker (routing + periodic tasks)")
        w = InlineWorker(settings=settings)
        with contextlib.suppress(KeyboardInterrupt):
            w.run()
        return
    from backend.jobs.engine import run_worker

    run_worker(url=url, queues=chosen,
               concurrency=concurrency or get_job_settings().worker_concurrency, name=name)


def jobs() -> None:
    """The periodic tasks' last run and outcome, and the job queue's counts."""
    from backend.db import session_scope
    from backend.jobs.runs import last_runs

    settings = _settings()
    with session_scope() as session:
        runs = last_runs(session=session)
        counts = []
        if not settings.resolved_database_url.startswith("sqlite"):
            from backend.jobs.engine import job_counts

            counts = job_counts(session=session)
        else:
            from backend.jobs.stages import received_ids

            counts = [{"queue_name": "(in-process)", "task_name": "route",
                       "status": "received items",
                       "n": len(received_ids(session=session, limit=10**9))}]
    table = Table(title="Periodic tasks (last run)")
    for col in ("task", "key", "outcome", "started", "took", "runs", "detail"):
        table.add_column(col)
    for r in runs:
        took = f"{(r.finished_at - r.started_at).total_seconds():.1f} s" if r.finished_at else "…"
        detail = r.error or ", ".join(f"{k}={v}" for k, v in (r.detail or {}).items())
        table.add_row(r.name, r.key, r.outcome, r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                      took, str(r.runs), detail[:80])
    console.print(table if runs else "no periodic task has run yet")
    t = Table(title="Jobs")
    for col in ("queue", "task", "status", "jobs"):
        t.add_column(col)
    for c in counts:
        t.add_row(c["queue_name"], c["task_name"], c["status"], str(c["n"]))
    console.print(t)


def crowd_sync() -> None:
    """Push every crowd queue that filled up (by kind) and pull each open pool, once
    (the worker runs this on QUORUM_JOBS_CROWD_SYNC_CRON)."""
    from backend.jobs.tasks import crowd_sync as sync

    _settings()
    out = sync()
    for p in out["pushed"]:
        console.print(f"pushed {p['queue']} → crowd pool {p['pool']} ({p['items']} items)")
    console.print(f"pulled {len(out['pools'])} open pool(s)"
                  + (f": {', '.join(map(str, out['pools']))}" if out["pools"] else ""))


def register(app: typer.Typer, crowd_app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(jobs)
    crowd_app.command("sync")(crowd_sync)
