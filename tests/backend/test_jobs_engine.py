"""The job engine on PostgreSQL: real ``quorum worker`` processes over one backlog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from backend.db import session_scope, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.service import ingest
from backend.jobs.dispatch import accept
from backend.queues.models import Task
from tests.conftest import item_row

ROOT = Path(__file__).resolve().parents[2]
PROCRASTINATE_TABLES = ("procrastinate_events", "procrastinate_periodic_defers",
                        "procrastinate_jobs", "procrastinate_workers")


@pytest.fixture
def pg(settings):  # noqa: ANN001, ANN201
    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        pytest.skip("the job engine runs on PostgreSQL; SQLite routes in-process")
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(PROCRASTINATE_TABLES) + " RESTART IDENTITY CASCADE")
    return plain


def _worker(url: str, tmp_path: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "QUORUM_DATABASE_URL": url, "PYTHONPATH": str(ROOT),
           "QUORUM_DATA_DIR": str(tmp_path / "var"), "QUORUM_ML_ENABLED": "false",
           "QUORUM_JOBS_WORKER_CONCURRENCY": "1", "QUORUM_JOBS_HEARTBEAT_SECONDS": "1",
           "QUORUM_JOBS_STALLED_SECONDS": "4", "QUORUM_JOBS_STALLED_CRON": "* * * * * */2",
           "QUORUM_JOBS_HEARTBEAT_FILE": str(tmp_path / f"{name}.beat")}
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "backend.cli", "worker", "--name", name],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _doing(conn: psycopg.Connection) -> list[tuple[int, int]]:
    return conn.execute("SELECT id, worker_id FROM procrastinate_jobs WHERE status = 'doing' "
                        "AND task_name = 'quorum.route' ORDER BY id").fetchall()


def _wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_one_killed_mid_batch_route_every_item_exactly_once(
        pg, settings, policy, tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("QUORUM_JOBS_ROUTE_BATCH_SIZE", "25")
    from backend.jobs.settings import get_job_settings

    get_job_settings.cache_clear()
    with session_scope() as s:
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(200)], policy=policy,
                        now=utcnow())
        assert accept(session=s, item_ids=ids, now=utcnow(), settings=settings,
                      wait=False) is None
    get_job_settings.cache_clear()
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(ItemStatus)
                        .where(ItemStatus.state == "received")) == 200

    # hold every route job mid-batch: routing writes tasks, which this lock blocks
    blocker = psycopg.connect(pg)
    blocker.execute("LOCK TABLE tasks IN SHARE MODE")
    watch = psycopg.connect(pg, autocommit=True)
    a = _worker(settings.resolved_database_url, tmp_path, "a")
    b = None
    try:
        [(job_a, worker_a)] = _wait_for(lambda: _doing(watch), 60, "worker a's first job")
        b = _worker(settings.resolved_database_url, tmp_path, "b")
        _wait_for(lambda: len(_doing(watch)) == 2, 60, "worker b's first job")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed_at = time.monotonic()
        blocker.rollback()  # release the lock: b goes on, a's transaction is gone

        def drained() -> bool:
            left = watch.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = "
                                 "'quorum.route' AND status IN ('todo', 'doing')").fetchone()
            return left[0] == 0

        _wait_for(drained, 60, "the backlog to drain after the kill")
        assert time.monotonic() - killed_at < 60
        assert (tmp_path / "b.beat").exists()  # what the container health check reads
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(30)
        blocker.close()

    status, = watch.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                            (job_a,)).fetchone()
    started, = watch.execute("SELECT count(*) FROM procrastinate_events WHERE job_id = %s "
                             "AND type = 'started'", (job_a,)).fetchone()
    watch.close()
    assert status == "succeeded" and started >= 2, "the killed worker's job was retried"
    with session_scope() as s:
        per_item = dict.fromkeys(ids, 0)
        for item_id, n in s.execute(select(Task.item_id, func.count()).group_by(Task.item_id)):
            per_item[item_id] += n
        for item_id, n in s.execute(select(DecisionEvent.item_id, func.count())
                                    .group_by(DecisionEvent.item_id)):
            per_item[item_id] += n
        assert set(per_item.values()) == {1}, "one task or one decision per item, no more"
        assert s.scalar(select(func.count()).select_from(ItemStatus)
                        .where(ItemStatus.state == "received")) == 0
    assert worker_a is not None


def test_a_downgrade_keeps_the_jobs_not_run_yet(pg, settings, policy, tmp_path):
    from backend.migrate import downgrade, upgrade
    from tests.pg import create_database, drop_database, server_url

    server = server_url()
    url = create_database(server, prefix="quorum_mig")
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        upgrade(url)
        with session_scope(url) as s:
            _, ids = ingest(session=s, rows=[item_row(i) for i in range(30)], policy=policy,
                            now=utcnow())
            accept(session=s, item_ids=ids, now=utcnow(), settings=settings, wait=False)
        downgrade(url, "0004")
        upgrade(url)
        with psycopg.connect(plain) as conn:
            jobs = conn.execute("SELECT args, status::text FROM procrastinate_jobs "
                                "WHERE task_name = 'quorum.route'").fetchall()
            states = conn.execute("SELECT DISTINCT state FROM item_status").fetchall()
        assert sorted(i for args, _ in jobs for i in args["item_ids"]) == sorted(ids)
        assert {st for _, st in jobs} == {"todo"} and states == [("received",)]
    finally:
        from backend.db import dispose_engines

        dispose_engines()
        drop_database(server, url)
