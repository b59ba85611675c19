"""The job engine on PostgreSQL: procrastinate.

Jobs are rows in ``procrastinate_jobs`` (schema: migration 0008), next to the data they
describe. Ingest defers its ``route`` jobs on the request's own connection, inside the
request's transaction (``defer_routing``): the items and their jobs commit together or
not at all. Workers (``quorum worker``) fetch jobs with ``FOR UPDATE SKIP LOCKED``, retry
failures with exponential backoff, run the periodic tasks (each under a ``lock``, so one
run at a time, and a ``queueing_lock``, so runs never pile up) and send heartbeats; the
``retry_stalled`` task puts the jobs of a worker that stopped beating (``kill -9``, a lost
machine) back in the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from backend.jobs import tasks
from backend.jobs.settings import get_job_settings

log = logging.getLogger("quorum.jobs")

ROUTE = "quorum.route"
CROWD_PULL = "quorum.crowd_pull"


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache
def get_app(url: str) -> procrastinate.App:
    """The procrastinate app of the database at ``url``, with every Quorum task."""
    js = get_job_settings()
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=conninfo(url), min_size=1, max_size=max(4, js.worker_concurrency + 2)))
    retry = procrastinate.RetryStrategy(max_attempts=js.max_attempts, wait=1,
                                        exponential_wait=2)

    @app.task(name=ROUTE, queue="embed", retry=retry)
    def route(*, item_ids: list[int]) -> dict[str, Any]:
        return tasks.route(item_ids=item_ids)

    @app.task(name=CROWD_PULL, queue="crowd", retry=retry)
    def crowd_pull(*, pool_id: int) -> dict[str, Any]:
        return tasks.crowd_pull(pool_id=pool_id)

    def defer_pull(pool_id: int) -> None:
        key = f"crowd-pool:{pool_id}"
        try:  # one pull per pool at a time (lock), never two waiting (queueing lock)
            crowd_pull.configure(lock=key, queueing_lock=key).defer(pool_id=pool_id)
        except AlreadyEnqueued:
            log.info("a pull of crowd pool %s is already queued", pool_id)

    def periodic_runner(name: str):  # noqa: ANN202
        if name == "crowd_sync":
            return lambda: tasks.crowd_sync(pull=defer_pull)
        return tasks.RUNNERS[name]

    for p in tasks.PERIODIC:
        if not p.enabled(js):
            continue
        run = periodic_runner(p.name)

        def periodic(timestamp: int, _run: Any = run) -> None:
            _run()

        task = app.task(name=f"quorum.{p.name}", queue=p.queue, lock=f"quorum.{p.name}",
                        queueing_lock=f"quorum.{p.name}")(periodic)
        app.periodic(cron=p.cron(js), periodic_id=p.name)(task)

    @app.periodic(cron=js.stalled_cron, periodic_id="retry_stalled")
    @app.task(name="quorum.retry_stalled", queue="periodic", queueing_lock="quorum.retry_stalled",
              pass_context=True)
    async def retry_stalled(context: procrastinate.JobContext, timestamp: int) -> None:
        """Jobs of workers without a heartbeat for ``stalled_seconds`` go back to the queue."""
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=js.stalled_seconds):
            log.warning("retrying job %s (%s): its worker stopped", job.id, job.task_name)
            await manager.retry_job(job)

    @app.periodic(cron="17 * * * *", periodic_id="remove_old_jobs")
    @app.task(name="quorum.remove_old_jobs", queue="periodic",
              queueing_lock="quorum.remove_old_jobs", pass_context=True)
    async def remove_old_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=js.keep_finished_hours)

    return app


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def defer_routing(*, session: Session, item_ids: Sequence[int], batch_size: int) -> list[int]:
    """Defer ``route`` jobs for ``item_ids`` (``batch_size`` per job) in ``session``'s
    transaction; returns the job ids."""
    if not item_ids:
        return []
    url = session.get_bind().url.render_as_string(hide_password=False)
    conn = session.connection().connection.driver_connection
    ids = list(item_ids)
    job = get_app(url).tasks[ROUTE].configure(connection=conn)
    return job.batch_defer(*[{"item_ids": ids[i:i + batch_size]}
                             for i in range(0, len(ids), batch_size)])


def run_worker(*, url: str, queues: Sequence[str] | None, concurrency: int,
               name: str | None = None) -> None:
    """Run a worker until SIGINT/SIGTERM (then it finishes its running jobs)."""
    js = get_job_settings()
    app = get_app(url)

    async def beat(path: Path) -> None:
        while True:
            path.touch()
            await asyncio.sleep(js.heartbeat_seconds)

    async def main() -> None:
        async with app.open_async():
            beating = asyncio.create_task(beat(Path(js.heartbeat_file))) \
                if js.heartbeat_file else None
            try:
                await app.run_worker_async(
                    queues=list(queues) if queues else None, concurrency=concurrency,
                    name=name, update_heartbeat_interval=js.heartbeat_seconds,
                    stalled_worker_timeout=js.stalled_seconds, wait=True)
            finally:
                if beating is not None:
                    beating.cancel()

    asyncio.run(main())


def job_counts(*, session: Session) -> list[dict[str, Any]]:
    """Jobs per queue, task and status (``procrastinate_jobs``)."""
    from sqlalchemy import text

    rows = session.execute(text(
        "SELECT queue_name, task_name, status::text AS status, count(*) AS n "
        "FROM procrastinate_jobs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")).mappings().all()
    return [dict(r) for r in rows]
