"""Lease + verdict round trips over HTTP against PostgreSQL, with N concurrent moderators.

    .venv/bin/python bench/lease.py [--moderators 1,8,32] [--seconds 20] [--workers 4]
                                    [--tasks 30000] [--think-ms 0]

A fresh database ``quorum_bench_<random>`` (migrated with Alembic) gets ``--tasks``
generated items queued in ``MANUAL`` and one moderator (with an API token) per
concurrent client. The app runs under uvicorn in a subprocess on 127.0.0.1 (a free
port, ``--workers`` processes). Each moderator is a thread with its own HTTP client
that loops ``POST /api/v1/tasks/lease`` then ``POST /api/v1/tasks/{id}/verdict``
(closed loop: no think time unless ``--think-ms``) for ``--seconds`` per level.
Prints round trips/s and p50/p99 latency per round trip and per call. Loopback only;
the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database, median, percentile, use_database  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("ok", "restricted", "adult", "prohibited", "fraud")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefill(url: str, n_tasks: int, n_users: int) -> list[str]:
    """Queue ``n_tasks`` items in MANUAL; create ``n_users`` moderators; return tokens."""
    from backend.db import session_scope, utcnow
    from backend.demo.generator import generate
    from backend.items.service import ingest
    from backend.policy import get_policy
    from backend.queues.service import enqueue
    from backend.settings import get_settings
    from backend.users.service import create_user, issue_token

    settings, policy = get_settings(), get_policy()
    rows = generate(n_tasks, seed=11, golden_rate=0.0).rows
    for start in range(0, len(rows), 10_000):
        with session_scope(url) as s:
            now = utcnow()
            _, ids = ingest(session=s, rows=rows[start:start + 10_000], policy=policy,
                            partial=True, now=now)
            enqueue(session=s, kind="MANUAL", item_ids=ids, now=now, settings=settings)
    tokens = []
    with session_scope(url) as s:
        for k in range(n_users):
            user = create_user(session=s, username=f"bench-mod-{k:03d}", role="moderator",
                               queue_kinds=["MANUAL"])
            tokens.append(issue_token(session=s, user=user, name="bench"))
    return tokens


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, QUORUM_DATABASE_URL=url, QUORUM_ML_ENABLED="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("uvicorn did not answer within 60 s")


def run_level(base: str, tokens: list[str], seconds: float, think_ms: float
              ) -> dict[str, Any]:
    import httpx

    lock = threading.Lock()
    trips: list[float] = []
    leases: list[float] = []
    verdicts: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds
    barrier = threading.Barrier(len(tokens))

    def moderator(token: str, k: int) -> None:
        my_trips, my_leases, my_verdicts = [], [], []
        with httpx.Client(base_url=base, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            client.get("/api/v1/queues")  # warm the connection
            barrier.wait()
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = client.post("/api/v1/tasks/lease", json={})
                t1 = time.perf_counter()
                if r.status_code != 200 or not r.json().get("task"):
                    with lock:
                        errors.append(f"lease {r.status_code} {r.text[:120]}")
                    break
                task_id = r.json()["task"]["id"]
                r = client.post(f"/api/v1/tasks/{task_id}/verdict",
                                json={"label": LABELS[k % len(LABELS)], "time_spent_ms": 1})
                t2 = time.perf_counter()
                if r.status_code != 200:
                    with lock:
                        errors.append(f"verdict {r.status_code} {r.text[:120]}")
                    break
                my_leases.append(t1 - t0)
                my_verdicts.append(t2 - t1)
                my_trips.append(t2 - t0)
                if think_ms:
                    time.sleep(think_ms / 1000)
        with lock:
            trips.extend(my_trips)
            leases.extend(my_leases)
            verdicts.extend(my_verdicts)

    threads = [threading.Thread(target=moderator, args=(t, k)) for k, t in enumerate(tokens)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return {"moderators": len(tokens), "trips": len(trips), "rate": len(trips) / elapsed,
            "trip_p50": ms(trips, 50), "trip_p99": ms(trips, 99),
            "lease_p50": ms(leases, 50), "lease_p99": ms(leases, 99),
            "verdict_p50": ms(verdicts, 50), "verdict_p99": ms(verdicts, 99),
            "errors": errors, "median_trip_ms": median(trips) * 1000 if trips else 0.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moderators", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=30_000)
    ap.add_argument("--think-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.moderators.split(",") if x]
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise SystemExit("--moderators: 1 to 256 each")
    if args.seconds <= 0 or args.seconds > 300:
        raise SystemExit("--seconds: up to 300")

    with bench_database("postgres") as url:
        use_database(url)
        t = time.perf_counter()
        tokens = prefill(url, args.tasks, max(levels))
        print(f"prefilled {args.tasks:,} MANUAL tasks, {max(levels)} moderators "
              f"in {time.perf_counter() - t:.1f}s")
        from backend.db import dispose_engines

        dispose_engines()
        port = free_port()
        server = start_server(url, port, args.workers)
        try:
            print(f"uvicorn: {args.workers} workers on 127.0.0.1:{port}; {args.seconds:g}s per "
                  f"level, closed loop{f', think {args.think_ms:g} ms' if args.think_ms else ''}")
            print(f"{'mods':>4} {'trips':>7} {'trips/s':>8} {'trip p50':>9} {'trip p99':>9} "
                  f"{'lease p50':>10} {'lease p99':>10} {'verdict p50':>12} {'verdict p99':>12}")
            for n in levels:
                r = run_level(f"http://127.0.0.1:{port}", tokens[:n], args.seconds,
                              args.think_ms)
                print(f"{n:>4} {r['trips']:>7,} {r['rate']:>8.1f} {r['trip_p50']:>7.1f}ms "
                      f"{r['trip_p99']:>7.1f}ms {r['lease_p50']:>8.1f}ms {r['lease_p99']:>8.1f}ms "
                      f"{r['verdict_p50']:>10.1f}ms {r['verdict_p99']:>10.1f}ms", flush=True)
                for e in r["errors"][:3]:
                    print(f"     error: {e}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
