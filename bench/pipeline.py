"""The pipeline under a steady load, PostgreSQL, ML on: latency from ingest to decision,
the feed's and the webhooks' lag, and webhook delivery throughput.

    .venv/bin/python bench/pipeline.py [--rate 35] [--seconds 30] [--call-items 5]
                                       [--workers 1] [--encoder minilm]
                                       [--deliver-events 2000] [--deliver-cron "* * * * * *"]

1. **Steady load.** A fresh database with the demo rules (``backend/defaults/rules.yaml``),
   ``--workers`` ``quorum worker --queues embed --concurrency 1`` processes and one
   ``quorum worker --queues deliver,periodic`` (the ``deliver`` task every second:
   ``QUORUM_JOBS_DELIVER_CRON``), a webhook subscription to a receiver on loopback, and a
   feed consumer polling ``GET /api/v1/decisions?after=CURSOR`` every 200 ms. Demo items
   (``backend.demo.generator``, no images) are posted at ``--rate`` items/s, ``--call-items``
   a call, ``wait=false``, for ``--seconds``. A poller reads ``item_status`` every 50 ms.
   Prints, per item, **ingest → routed** (the answer of the POST to the first poll that
   sees the item decided or queued) p50 / p99; per decision, **routed → in the feed** and
   **routed → webhook received** p50 / p99; and whether the workers kept up.
2. **Webhook throughput.** ``--deliver-events`` decisions recorded at once, then
   ``deliveries.service.run_deliveries`` in this process (its default settings: batches
   of ``QUORUM_DELIVERIES_BATCH_SIZE``, one HTTP connection) until all are delivered to the
   loopback receiver: deliveries/s, and the feed paged through at ``limit=1000``:
   events/s.

Each run uses a database of its own (``bench/common.py``), dropped at the end. Latencies
are observed by polling, so they carry up to 50 ms (routed) and 200 ms (feed) of
sampling delay.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.common import bench_database, median, percentile, use_database  # noqa: E402


def _serve(log_path: str, ports: multiprocessing.Queue) -> None:
    """The receiver's process: answers 200 and logs ``<Idempotency-Key> <monotonic time>``."""
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - the process's lifetime

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            log.write(f"{self.headers['Idempotency-Key']} {time.monotonic()}\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


class Receiver:
    """A webhook receiver on loopback, in a process of its own (in this one it would share
    the GIL with the sender and slow it down): when each ``Idempotency-Key`` first arrived
    (``time.monotonic`` is the same clock in every process)."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / f"receiver-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log.touch()
        ports: multiprocessing.Queue = multiprocessing.Queue()
        self.proc = multiprocessing.Process(target=_serve, args=(str(self.log), ports),
                                            daemon=True)
        self.proc.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=30)}/hook"

    def calls(self) -> list[tuple[int, float]]:
        out = []
        for line in self.log.read_text().splitlines():
            key, _, at = line.partition(" ")
            if at:
                out.append((int(key), float(at)))
        return out

    @property
    def first(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for key, at in self.calls():
            seen.setdefault(key, at)
        return seen

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


def pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def fmt(values: list[float]) -> str:
    if not values:
        return "n/a (none)"
    return (f"p50 {median(values) * 1000:,.0f} ms, p99 {percentile(values, 99) * 1000:,.0f} ms"
            f" (n={len(values):,})")


def setup(url: str, receiver_url: str) -> tuple[object, dict[str, str]]:
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.db import session_scope
    from backend.deliveries.service import create_subscription
    from backend.policy import get_policy
    from backend.rules.service import load_rules_file
    from backend.users.service import create_user, issue_token

    with session_scope(url) as s:
        load_rules_file(session=s, path=ROOT / "backend/defaults/rules.yaml", policy=get_policy())
        token = issue_token(session=s, user=create_user(session=s, username="bench",
                                                        role="analyst"))
        create_subscription(session=s, url=receiver_url)
    return TestClient(create_app(database_url=url)), {"Authorization": f"Bearer {token}"}


def steady(args: argparse.Namespace, tmp: Path) -> None:
    import psycopg

    from backend.demo.generator import generate

    n_total = int(args.rate * args.seconds)
    warm = generate(20, seed=99).rows
    for r in warm:
        r["source"] = "warmup"
    rows = generate(n_total, seed=7).rows
    receiver = Receiver(tmp)
    with bench_database("postgres") as url:
        use_database(url, tmp / "var")
        client, headers = setup(url, receiver.url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "QUORUM_DATABASE_URL": url,
               "QUORUM_DATA_DIR": str(tmp / "var"), "QUORUM_JOBS_DELIVER_CRON": args.deliver_cron}
        cmd = [sys.executable, "-m", "backend.cli", "worker", "--concurrency", "1"]
        spy = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "50", "--format",
               "raw", "-o", args.profile_worker, "--"] if args.profile_worker else []
        procs = [subprocess.Popen([*(spy if i == 0 else []), *cmd, "--queues", "embed",
                                   "--name", f"embed{i}"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(args.workers)]
        procs.append(subprocess.Popen([*cmd, "--queues", "deliver,periodic", "--name", "deliver"],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        accepted: dict[int, float] = {}
        routed: dict[int, float] = {}
        in_feed: dict[int, tuple[int, float]] = {}  # event id -> (item id, first seen)
        stop = threading.Event()
        lock = threading.Lock()

        def poll_status() -> None:
            with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
                while not stop.is_set():
                    with lock:
                        waiting = [i for i in accepted if i not in routed]
                    if waiting:
                        seen = conn.execute("SELECT item_id FROM item_status WHERE item_id = "
                                            "ANY(%s) AND state <> 'received'", (waiting,))
                        now = time.monotonic()
                        with lock:
                            for (i,) in seen:
                                routed.setdefault(i, now)
                    time.sleep(0.05)

        def poll_feed() -> None:
            from fastapi.testclient import TestClient

            from backend.app import create_app

            feed_client = TestClient(create_app(database_url=url))
            cursor = 0
            while not stop.is_set():
                page = feed_client.get(f"/api/v1/decisions?after={cursor}&limit=1000",
                                       headers=headers).json()
                now = time.monotonic()
                for e in page["events"]:
                    in_feed.setdefault(e["event_id"], (e["item"]["id"], now))
                cursor = page["next_cursor"]
                if not page["has_more"]:
                    time.sleep(0.2)
            feed_client.close()

        try:
            r = client.post("/api/v1/items?wait=false", json=warm, headers=headers)
            with lock:
                accepted.update(dict.fromkeys(r.json()["item_ids"], time.monotonic()))
            threads = [threading.Thread(target=poll_status, daemon=True),
                       threading.Thread(target=poll_feed, daemon=True)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 300
            while len(routed) < len(warm) and time.monotonic() < deadline:
                time.sleep(0.2)  # the workers have loaded torch and the encoder
            warm_ids = set(accepted)
            print(f"workers ready ({args.workers} embed + 1 deliver); posting {n_total:,} "
                  f"items at {args.rate} items/s, {args.call_items} a call", flush=True)
            interval = args.call_items / args.rate
            t0 = time.monotonic()
            late = 0.0
            for k, start in enumerate(range(0, n_total, args.call_items)):
                due = t0 + k * interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    late = max(late, -pause)
                r = client.post("/api/v1/items?wait=false",
                                json=rows[start:start + args.call_items], headers=headers)
                assert r.status_code == 200, r.text
                now = time.monotonic()
                with lock:
                    accepted.update(dict.fromkeys(r.json()["item_ids"], now))
            posted_s = time.monotonic() - t0
            drain_until = time.monotonic() + args.drain_seconds
            while len(routed) < len(accepted) and time.monotonic() < drain_until:
                time.sleep(0.2)
            drained_s = time.monotonic() - t0
            with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
                events = dict(conn.execute(
                    "SELECT id, item_id FROM decision_events").fetchall())
                waits = conn.execute(
                    "SELECT EXTRACT(EPOCH FROM s.at - d.at), EXTRACT(EPOCH FROM f.at - s.at) "
                    "FROM procrastinate_jobs j "
                    "JOIN procrastinate_events d ON d.job_id = j.id AND d.type = 'deferred' "
                    "JOIN procrastinate_events s ON s.job_id = j.id AND s.type = 'started' "
                    "JOIN procrastinate_events f ON f.job_id = j.id AND f.type = 'succeeded' "
                    "WHERE j.task_name = 'quorum.route'").fetchall()
                sizes = conn.execute(
                    "SELECT c.relname, pg_total_relation_size(c.oid), "
                    "pg_indexes_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
                    "c.relkind = 'r' ORDER BY 2 DESC").fetchall()
            end = time.monotonic() + 60
            while time.monotonic() < end and not (
                    set(events) <= set(in_feed) and set(events) <= set(receiver.first)):
                time.sleep(0.5)
        finally:
            stop.set()
            for k, p in enumerate(procs):  # py-spy writes its profile on SIGINT
                p.send_signal(signal.SIGINT if k == 0 and spy else signal.SIGTERM)
            for p in procs:
                p.wait(60)
            client.close()
        ids = [i for i in accepted if i not in warm_ids]
        lat = [routed[i] - accepted[i] for i in ids if i in routed]
        decided = {e: i for e, i in events.items() if i not in warm_ids}
        feed_lag = [in_feed[e][1] - routed[i] for e, i in decided.items()
                    if e in in_feed and i in routed]
        hooks = receiver.first
        hook_lag = [hooks[e] - routed[i] for e, i in decided.items()
                    if e in hooks and i in routed]
        print(f"posted {len(ids):,} items in {posted_s:.1f} s ({len(ids) / posted_s:.1f} "
              f"items/s; the client ran at most {late * 1000:.0f} ms behind its schedule); "
              f"after {drained_s:.1f} s {len(lat):,} of {len(ids):,} were routed"
              + ("" if drained_s < posted_s + 5 else " — the workers did NOT keep up"))
        print(f"ingest → routed (decided or queued): {fmt(lat)}")
        print(f"route jobs (procrastinate_events): deferred → started "
              f"{fmt([float(w) for w, _ in waits])}; started → succeeded "
              f"{fmt([float(r) for _, r in waits])}")
        fed = sum(e in in_feed for e in decided)
        got = sum(e in hooks for e in decided)
        print(f"decisions: {len(decided):,} (rules); in the feed {fed:,}, webhooks received "
              f"{got:,} ({len(receiver.calls()):,} calls)")
        print(f"routed → in the feed (polled every 200 ms): {fmt(feed_lag)}")
        print(f"routed → webhook received (deliver task every second): {fmt(hook_lag)}")
        n_items = max(1, len(accepted))
        big = [(name, total, idx) for name, total, idx in sizes if total > 64 * 1024]
        print(f"database after {n_items:,} items (table + indexes + TOAST, bytes per item; "
              "small tables left out): " + ", ".join(
                  f"{name} {total / n_items:,.0f} (indexes {idx / n_items:,.0f})"
                  for name, total, idx in big)
              + f"; all tables {sum(t for _, t, _ in sizes) / n_items:,.0f}")
    receiver.close()


def delivery_throughput(n_events: int, tmp: Path) -> None:
    from sqlalchemy import func, select

    from backend.db import get_sessionmaker, session_scope, utcnow
    from backend.decisions.service import NewDecision, record_decisions
    from backend.deliveries.models import WebhookDelivery
    from backend.deliveries.service import run_deliveries
    from backend.deliveries.settings import get_delivery_settings
    from backend.demo.generator import generate
    from backend.items.service import ingest
    from backend.policy import get_policy

    receiver = Receiver(tmp)
    labels = ["fraud", "prohibited", "adult", "restricted", "ok"]
    with bench_database("postgres") as url:
        use_database(url, tmp / "var-deliver")
        client, headers = setup(url, receiver.url)
        policy = get_policy()
        with session_scope(url) as s:
            _, ids = ingest(session=s, rows=generate(n_events, seed=3).rows, policy=policy,
                            now=utcnow())
            record_decisions(session=s, decisions=[
                NewDecision(item_id=i, label=labels[k % len(labels)], source="moderator")
                for k, i in enumerate(ids)])
        sessions = get_sessionmaker(url)
        t0 = time.perf_counter()
        fed = 0
        while True:
            out = run_deliveries(sessions=sessions, cfg=get_delivery_settings(), policy=policy)
            fed += out["fed"]
            with session_scope(url) as s:
                left = s.scalar(select(func.count()).select_from(WebhookDelivery)
                                .where(WebhookDelivery.state != "delivered"))
            if not left:
                break
        took = time.perf_counter() - t0
        print(f"webhooks: {n_events:,} decisions sequenced ({fed:,}) and delivered in "
              f"{took:.1f} s = {n_events / took:,.0f} deliveries/s (one sender, loopback; "
              f"each body with its statement of reasons)")
        t0 = time.perf_counter()
        cursor, seen = 0, 0
        while True:
            page = client.get(f"/api/v1/decisions?after={cursor}&limit=1000",
                              headers=headers).json()
            seen += len(page["events"])
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        took = time.perf_counter() - t0
        print(f"feed: {seen:,} events paged at limit=1000 in {took:.2f} s = "
              f"{seen / took:,.0f} events/s")
        client.close()
    receiver.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=35.0, help="items/s posted")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--call-items", type=int, default=5, help="items per POST")
    ap.add_argument("--workers", type=int, default=1, help="embed workers")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--deliver-events", type=int, default=2000)
    ap.add_argument("--deliver-cron", default="* * * * * *",
                    help="QUORUM_JOBS_DELIVER_CRON of the deliver worker")
    ap.add_argument("--drain-seconds", type=float, default=60.0,
                    help="how long to wait for the backlog after the last POST")
    ap.add_argument("--profile-worker", metavar="FILE",
                    help="run the first embed worker under py-spy (raw stacks to FILE)")
    ap.add_argument("--skip-steady", action="store_true")
    args = ap.parse_args()
    os.environ.update({"QUORUM_ML_ENABLED": "true", "QUORUM_ML_ENCODER": args.encoder,
                       "QUORUM_ML_INDEX_KIND": "exact", "QUORUM_JOBS_INGEST_WAIT": "false"})
    with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmpdir:
        if not args.skip_steady:
            steady(args, Path(tmpdir))
        if args.deliver_events:
            delivery_throughput(args.deliver_events, Path(tmpdir))


if __name__ == "__main__":
    main()
