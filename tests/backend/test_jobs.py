"""Jobs on both backends: ingest accepts and queues routing in its transaction; the
dispatcher (in-process on SQLite, procrastinate jobs on PostgreSQL) routes each item once;
periodic tasks record their runs; crowd sync pushes by kind and pulls one pool at a time."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import func, select, text

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.db import get_sessionmaker, session_scope, utcnow  # noqa: E402
from backend.decisions.models import DecisionEvent, ItemStatus  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.jobs import tasks  # noqa: E402
from backend.jobs.dispatch import accept  # noqa: E402
from backend.jobs.inline import InlineWorker  # noqa: E402
from backend.jobs.models import JobRun  # noqa: E402
from backend.jobs.runs import track  # noqa: E402
from backend.jobs.settings import get_job_settings  # noqa: E402
from backend.queues.models import Task  # noqa: E402
from tests.conftest import auth, item_row  # noqa: E402


@pytest.fixture
def no_wait(settings, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("QUORUM_JOBS_INGEST_WAIT", "false")
    monkeypatch.setenv("QUORUM_JOBS_ROUTE_BATCH_SIZE", "10")
    get_job_settings.cache_clear()
    if settings.resolved_database_url.startswith("postgresql"):
        with session_scope() as s:
            s.execute(text("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE"))
    yield get_job_settings()
    get_job_settings.cache_clear()


def _states() -> dict[str, int]:
    with session_scope() as s:
        return dict(s.execute(select(ItemStatus.state, func.count())
                              .group_by(ItemStatus.state)).tuples().all())


def _route_jobs() -> list[list[int]]:
    """PostgreSQL: the queued route jobs' item ids (what a worker would run)."""
    with session_scope() as s:
        return [r[0]["item_ids"] for r in s.execute(text(
            "SELECT args FROM procrastinate_jobs WHERE task_name = 'quorum.route' "
            "AND status = 'todo' ORDER BY id"))]


def _run_dispatcher(url: str) -> None:
    """Run what the workers would: the in-process loop (SQLite) or each queued job."""
    if url.startswith("sqlite"):
        w = InlineWorker(periodic=False)
        while w.route_once():
            pass
        return
    for ids in _route_jobs():
        tasks.route(item_ids=ids)


def test_api_accepts_at_once_and_routing_runs_later(client, make_user, settings, no_wait):
    _, token = make_user("ana", "analyst")
    r = client.post("/api/v1/items", json=[item_row(i) for i in range(25)], headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["routed"] is False and body["states"] == ["received"] * 25
    assert _states() == {"received": 25}
    if settings.resolved_database_url.startswith("postgresql"):
        jobs = _route_jobs()
        assert sorted(i for ids in jobs for i in ids) == sorted(body["item_ids"])
        assert max(len(ids) for ids in jobs) == 10  # QUORUM_JOBS_ROUTE_BATCH_SIZE
    _run_dispatcher(settings.resolved_database_url)
    assert _states() == {"queued": 25}
    # ?wait=true: the old behaviour, routed before the answer
    r = client.post("/api/v1/items?wait=true", json=[item_row(i) for i in range(25, 30)],
                    headers=auth(token))
    assert r.json()["routed"] is True and r.json()["states"] == ["queued"] * 5


def test_reaccepting_a_batch_gives_the_same_ids_and_queues_nothing_more(
        client, make_user, settings, no_wait):
    """Acceptance (``wait=false``) is idempotent: the same batch again, with one key spelt
    in decomposed Unicode, answers the same ids, creates nothing and defers no new job; a
    row repeated inside one batch is refused (whole batch) or stored once (``partial``)."""
    _, token = make_user("ana", "analyst")
    rows = [item_row(i) for i in range(12)] + [item_row(0, external_id="caf\u00e9")]
    first = client.post("/api/v1/items?wait=false", json=rows, headers=auth(token)).json()
    assert first["created"] == 13 and first["states"] == ["received"] * 13
    pg = settings.resolved_database_url.startswith("postgresql")
    jobs = _route_jobs() if pg else None
    again = [dict(r) for r in rows]
    again[-1]["external_id"] = "cafe\u0301"  # the same key, decomposed (NFC: one item)
    r = client.post("/api/v1/items?wait=false", json=again, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["item_ids"] == first["item_ids"]
    assert (r.json()["created"], r.json()["unchanged"]) == (0, 13)
    if pg:
        assert _route_jobs() == jobs  # nothing new to route, so no new job
    dup = [item_row(20), item_row(21), item_row(20)]
    r = client.post("/api/v1/items?wait=false", json=dup, headers=auth(token))
    assert r.status_code == 422 and "duplicate of row 1" in r.text
    assert _states() == {"received": 13}
    r = client.post("/api/v1/items?wait=false&partial=true", json=dup, headers=auth(token))
    assert r.status_code == 207 and r.json()["created"] == 2
    assert r.json()["item_ids"][2] == 0 and r.json()["rejected"] == 1
    assert _states() == {"received": 15}
    if pg:
        queued = sorted(i for ids in _route_jobs() for i in ids)
        assert queued == sorted(first["item_ids"] + r.json()["item_ids"][:2])


def test_routing_queued_in_the_ingest_transaction_rolls_back_with_it(settings, policy,
                                                                     no_wait):
    sessions = get_sessionmaker(settings.resolved_database_url)
    s = sessions()
    _, ids = ingest(session=s, rows=[item_row(i) for i in range(5)], policy=policy, now=utcnow())
    accept(session=s, item_ids=ids, now=utcnow(), settings=settings, wait=False)
    s.rollback()
    s.close()
    assert _states() == {}
    if settings.resolved_database_url.startswith("postgresql"):
        assert _route_jobs() == []  # no job without its items: one transaction, no dual write


def test_a_route_job_run_twice_routes_each_item_once(settings, policy, no_wait):
    with session_scope() as s:
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(12)], policy=policy,
                        now=utcnow())
        accept(session=s, item_ids=ids, now=utcnow(), settings=settings, wait=False)
    first = tasks.route(item_ids=ids)
    again = tasks.route(item_ids=ids)  # a retried job whose first run had committed
    assert (first["items"], again["items"]) == (12, 0)
    with session_scope() as s:
        n_tasks = s.scalar(select(func.count()).select_from(Task))
        n_events = s.scalar(select(func.count()).select_from(DecisionEvent))
    assert n_tasks + n_events == 12


def test_cli_ingest_waits_by_default_and_no_wait_queues(settings, tmp_path, no_wait):
    from typer.testing import CliRunner

    from backend.cli import app

    f = tmp_path / "items.jsonl"
    import json

    f.write_text("\n".join(json.dumps(item_row(i)) for i in range(6)))
    res = CliRunner().invoke(app, ["ingest", str(f)])
    assert res.exit_code == 0, res.output
    assert "queued: NEW_PRODUCTS 6" in res.output and _states() == {"queued": 6}
    f.write_text("\n".join(json.dumps(item_row(i)) for i in range(6, 9)))
    res = CliRunner().invoke(app, ["ingest", str(f), "--no-wait"])
    assert res.exit_code == 0 and "3 item(s) received" in res.output
    assert _states() == {"queued": 6, "received": 3}


def test_periodic_runs_are_recorded_and_shown(settings, client, make_user, monkeypatch):
    from typer.testing import CliRunner

    from backend.cli import app

    monkeypatch.delenv("QUORUM_CROWD_TOLOKA_URL", raising=False)
    w = InlineWorker()
    w.due = dict.fromkeys(w.due, utcnow())  # everything is due now
    monkeypatch.setenv("QUORUM_JOBS_CROWD_SYNC_ENABLED", "true")
    get_job_settings.cache_clear()
    w.due["crowd_sync"] = utcnow()
    ran = w.run_due()
    get_job_settings.cache_clear()
    assert {"expire_leases", "deliver", "propose_thresholds", "crowd_sync"} <= set(ran)
    with session_scope() as s:
        runs = {r.name: r for r in s.scalars(select(JobRun))}
    assert runs["expire_leases"].outcome == "ok" and runs["expire_leases"].detail == {
        "returned": 0}
    assert runs["crowd_sync"].outcome == "failed"
    assert "QUORUM_CROWD_TOLOKA_URL is unset" in runs["crowd_sync"].error
    res = CliRunner().invoke(app, ["jobs"])
    assert res.exit_code == 0 and "expire_leases" in res.output and "failed" in res.output
    _, admin = make_user("root", "admin")
    body = client.get("/api/v1/jobs", headers=auth(admin)).json()
    assert {r["name"]: r["outcome"] for r in body["periodic"]}["expire_leases"] == "ok"
    _, ana = make_user("ana", "analyst")
    assert client.get("/api/v1/jobs", headers=auth(ana)).status_code == 403


def test_an_exclusive_run_refuses_a_second_one_at_the_same_time(settings):
    from backend.jobs.runs import AlreadyRunning

    sessions = get_sessionmaker(settings.resolved_database_url)
    with track(sessions=sessions, name="crowd_pull", key="pool:1", timeout_s=60):
        with pytest.raises(AlreadyRunning), track(sessions=sessions, name="crowd_pull",
                                                  key="pool:1", timeout_s=60):
            pass
        with track(sessions=sessions, name="crowd_pull", key="pool:2", timeout_s=60):
            pass  # another pool is another lock
    with track(sessions=sessions, name="crowd_pull", key="pool:1", timeout_s=60):
        pass  # free again once the first finished


def test_proposals_are_applied_only_with_auto_apply(settings, policy, monkeypatch):
    from backend.calibration import service as cal_service
    from backend.calibration import thresholds
    from backend.users.models import AuditEntry

    def fake_run(*, session, kind):  # noqa: ANN001, ANN202 - a backed proposal
        thresholds.active_threshold_set(session=session, policy=policy)
        active = next(t for t in thresholds.list_sets(session=session) if t.state == "active")
        ts = thresholds.propose(session=session, policy=policy, bands=active.bands,
                                reuse_distance=active.reuse_distance,
                                auto_decide=active.auto_decide)

        class Run:
            id, message, result = 1, "proposed", {"proposed_version": ts.version}

        return Run()

    monkeypatch.setattr(cal_service, "run_calibration", fake_run)
    monkeypatch.delenv("QUORUM_CALIBRATION_AUTO_APPLY", raising=False)
    out = tasks.propose_thresholds()
    assert out["proposed"] is not None and out["applied"] is False
    with session_scope() as s:
        assert thresholds.get_version(session=s, version=out["proposed"]).state == "proposed"
    monkeypatch.setenv("QUORUM_CALIBRATION_AUTO_APPLY", "true")
    out = tasks.propose_thresholds()
    assert out["applied"] is True
    with session_scope() as s:
        assert thresholds.get_version(session=s, version=out["proposed"]).state == "active"
        audit = s.scalars(select(AuditEntry).where(
            AuditEntry.action == "thresholds.auto_apply")).all()
    assert [a.target_id for a in audit] == [str(out["proposed"])]


def test_crowd_sync_pushes_by_kind_and_pulls_each_pool_until_closed(settings, policy,
                                                                    monkeypatch):
    from backend.crowdwork.models import CrowdPool
    from backend.crowdwork.settings import get_crowd_settings
    from crowd.emulator import Emulator, SimWorker
    from tests.backend.test_crowd_support import seed_queue

    queue, truth = seed_queue(settings, policy, n=16, n_golden=8)
    for k, v in {"OVERLAP": "3", "MIN_ANSWERS": "3", "MAX_OVERLAP": "5",
                 "TARGET_CONFIDENCE": "0.7", "TASKS_PER_SUITE": "4", "GOLDEN_PER_SUITE": "1",
                 "AGGREGATION": "mv"}.items():
        monkeypatch.setenv(f"QUORUM_CROWD_{k}", v)
    workers = [SimWorker(f"w{i}", accuracy=0.97, seconds_per_task=10.0) for i in range(10)]
    with Emulator(seed=3, workers=workers, truth=truth) as emu:
        monkeypatch.setenv("QUORUM_CROWD_TOLOKA_URL", emu.url)
        get_crowd_settings.cache_clear()
        try:
            out = tasks.crowd_sync()
            assert [p["queue"] for p in out["pushed"]] == [queue]
            [pool_id] = out["pools"]
            with session_scope() as s:
                toloka_id = s.get(CrowdPool, pool_id).toloka_pool_id
            # a pull of this pool in progress elsewhere: this one stays out of its way
            with track(sessions=get_sessionmaker(), name="crowd_pull", key=f"pool:{pool_id}",
                       timeout_s=60):
                assert "skipped" in tasks.crowd_pull(pool_id=pool_id)
            for _ in range(6):
                emu.work(toloka_id)
                out = tasks.crowd_sync()
                assert out["pushed"] == []  # nothing new filled up: no second pool
                if not out["pools"]:
                    break
        finally:
            get_crowd_settings.cache_clear()
    with session_scope() as s:
        pools = s.scalars(select(CrowdPool)).all()
        crowd_events = s.scalar(select(func.count()).select_from(DecisionEvent)
                                .where(DecisionEvent.source == "crowd"))
        pulls = s.scalars(select(JobRun).where(JobRun.name == "crowd_pull")
                          .order_by(JobRun.started_at)).all()
    assert [(p.id, p.state) for p in pools] == [(pool_id, "closed")]
    assert crowd_events >= 12
    finished = [r for r in pulls if r.outcome == "ok"]
    for a, b in zip(finished, finished[1:], strict=False):
        assert a.finished_at <= b.started_at  # one pull of the pool at a time


def test_engine_queues_one_pull_per_pool(settings):
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("procrastinate's queueing lock is PostgreSQL's")
    from backend.jobs.engine import CROWD_PULL, get_app

    with session_scope() as s:
        s.execute(text("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE"))
    app = get_app(settings.resolved_database_url)
    from procrastinate.exceptions import AlreadyEnqueued

    task = app.tasks[CROWD_PULL]
    with app.open():
        task.configure(lock="crowd-pool:7", queueing_lock="crowd-pool:7").defer(pool_id=7)
        with pytest.raises(AlreadyEnqueued):
            task.configure(lock="crowd-pool:7", queueing_lock="crowd-pool:7").defer(pool_id=7)
        task.configure(lock="crowd-pool:8", queueing_lock="crowd-pool:8").defer(pool_id=8)
    with session_scope() as s:
        n = s.scalar(text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = :t"),
                     {"t": CROWD_PULL})
    assert n == 2


def test_admin_jobs_page_shows_the_last_runs(settings, client, make_user):
    from tests.web.test_web import login

    tasks.expire_leases()
    make_user("root", "admin", password="pw-root-123456")
    make_user("ana", "analyst", password="pw-ana-1234567")
    login(client, "ana", "pw-ana-1234567")
    assert client.get("/admin/jobs").status_code == 403
    client.cookies.clear()
    login(client, "root", "pw-root-123456")
    page = client.get("/admin/jobs")
    assert page.status_code == 200 and "expire_leases" in page.text and ">ok<" in page.text


def test_the_in_process_worker_thread_routes_what_the_api_accepted(settings, client,
                                                                   make_user, no_wait):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL routes through the job engine's workers")
    import time

    _, token = make_user("ana", "analyst")
    worker = InlineWorker(periodic=False).start()
    try:
        r = client.post("/api/v1/items", json=[item_row(i) for i in range(15)],
                        headers=auth(token))
        assert r.json()["routed"] is False
        deadline = time.monotonic() + 30
        while _states().get("received") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    assert _states() == {"queued": 15}


def test_the_demo_is_composed_from_services_not_from_the_cli():
    """``backend.cli`` imports the demo; the demo must not import ``backend.cli`` back."""
    import ast
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "backend" / "demo"
    offenders = []
    for path in sorted(demo.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "backend.cli"]
    assert not offenders


@pytest.mark.parametrize(("queues", "warmed"), [("embed", True), (None, True),
                                                ("periodic,deliver", False)])
def test_an_embed_worker_loads_its_encoder_before_it_takes_a_job(
        settings, ml_on, monkeypatch, queues, warmed):  # noqa: ANN001
    """A fresh worker used to load the encoder inside its first route job (~6 s for MiniLM
    on these machines): a worker scaled out under a backlog started that much late."""
    from typer.testing import CliRunner

    from backend.cli import app
    from backend.jobs import engine, inline
    from backend.ml_adapter import service

    monkeypatch.setattr(service, "_encoders", {})  # no encoder loaded yet; restored after
    loaded_when_started: list[bool] = []

    def started(*_a, **_k) -> None:  # noqa: ANN002, ANN003 - the worker loop, stubbed
        loaded_when_started.append(bool(service._encoders))

    monkeypatch.setattr(engine, "run_worker", started)
    monkeypatch.setattr(inline.InlineWorker, "run", started)
    res = CliRunner().invoke(app, ["worker", *(["--queues", queues] if queues else [])])
    assert res.exit_code == 0, res.output
    assert loaded_when_started == [warmed]
    assert ("encoder hashing:" in res.output) is warmed
