"""Lease + verdict round trips over HTTP against PostgreSQL, with N concurrent moderators.

    .venv/bin/python bench/lease.py [--moderators 1,8,32] [--seconds 20]
                                    [--think-ms 1000,3000] [--think-seconds 60]
                                    [--workers 4] [--tasks 30000]

A fresh database ``quorum_bench_<random>`` (migrated with Alembic) gets ``--tasks``
generated items queued in ``MANUAL`` and one moderator (with an API token) per
concurrent client. The app runs under uvicorn in a subprocess on 127.0.0.1 (a free
port, ``--workers`` processes). The client runs in a process of its own (asyncio, one
HTTP connection per moderator); each moderator loops ``POST /api/v1/tasks/lease`` then
``POST /api/v1/tasks/{id}/verdict``.

Two kinds of run:

* **closed loop** at each ``--moderators`` level: no think time, the next lease leaves as
  soon as the verdict is answered. This measures capacity: by Little's law latency is
  then concurrency / throughput.
* **paced** at the largest level, once per ``--think-ms``: between the lease and the
  verdict each moderator looks at the card for an exponentially distributed time with
  that mean, and moderators start at random offsets, as people do (the seed's crowd
  takes 15 s per item).

Prints round trips/s and p50/p99 latency per round trip (lease + verdict, think time
excluded) and per call. Loopback only; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database, percentile, use_database  # noqa: E402

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
    # the server refuses to start without a sound key: a throwaway one for this run
    env.setdefault("QUORUM_SECRET_KEY", secrets.token_hex(32))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.asgi:app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log",
         # a moderator's connection idles through a card (exponential think times: some
         # over uvicorn's default 5 s); keep it open as a proxy in front would
         "--timeout-keep-alive", "120"],
        cwd=ROOT, env=env)
    import httpx

    deadline = time.monotonic() + 180  # 4 workers importing the app on a loaded machine
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
    raise SystemExit("uvicorn did not answer within 180 s")


def run_level(base: str, tokens: list[str], seconds: float, think_ms: float,
              seed: int = 0) -> dict[str, Any]:
    """One level, measured by a client in a process of its own (``--client``), so the
    client's own scheduling does not sit in the server's figures."""
    payload = json.dumps({"base": base, "tokens": tokens, "seconds": seconds,
                          "think_ms": think_ms, "seed": seed})
    out = subprocess.run([sys.executable, __file__, "--client"], input=payload.encode(),
                         capture_output=True, cwd=ROOT, timeout=seconds + 120)
    if out.returncode != 0:
        raise SystemExit(f"client failed: {out.stderr.decode()[-2000:]}")
    raw = json.loads(out.stdout)

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    trips, leases, verdicts = raw["trips"], raw["leases"], raw["verdicts"]
    return {"moderators": len(tokens), "trips": len(trips), "rate": len(trips) / raw["elapsed"],
            "trip_p50": ms(trips, 50), "trip_p99": ms(trips, 99),
            "lease_p50": ms(leases, 50), "lease_p99": ms(leases, 99),
            "verdict_p50": ms(verdicts, 50), "verdict_p99": ms(verdicts, 99),
            "errors": raw["errors"]}


async def _client(base: str, tokens: list[str], seconds: float, think_ms: float,
                  seed: int) -> dict[str, Any]:
    """Every moderator is a task with its own HTTP connection. Closed loop when
    ``think_ms`` is 0; otherwise each moderator looks at a card for an exponentially
    distributed time (mean ``think_ms``) and the moderators start at random offsets
    within one mean think time, so they do not work in lockstep."""
    import asyncio
    import random

    import httpx

    trips: list[float] = []
    leases: list[float] = []
    verdicts: list[float] = []
    errors: list[str] = []
    ready = asyncio.Event()
    stop_at = [0.0]

    async def moderator(token: str, k: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + k)
        await client.get("/api/v1/queues")  # open the connection
        await ready.wait()
        if think_ms:
            await asyncio.sleep(rng.uniform(0, think_ms) / 1000)
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            r = await client.post("/api/v1/tasks/lease", json={})
            t1 = time.perf_counter()
            if r.status_code != 200 or not r.json().get("task"):
                errors.append(f"lease {r.status_code} {r.text[:120]}")
                return
            task_id = r.json()["task"]["id"]
            if think_ms:
                await asyncio.sleep(rng.expovariate(1000 / think_ms))
            t2 = time.perf_counter()
            r = await client.post(f"/api/v1/tasks/{task_id}/verdict",
                                  json={"label": LABELS[k % len(LABELS)], "time_spent_ms": 1})
            t3 = time.perf_counter()
            if r.status_code != 200:
                errors.append(f"verdict {r.status_code} {r.text[:120]}")
                return
            leases.append(t1 - t0)
            verdicts.append(t3 - t2)
            trips.append((t1 - t0) + (t3 - t2))

    clients = [httpx.AsyncClient(base_url=base, timeout=30,
                                 headers={"Authorization": f"Bearer {t}"}) for t in tokens]
    try:
        jobs = [asyncio.create_task(moderator(t, k, c))
                for k, (t, c) in enumerate(zip(tokens, clients, strict=True))]
        await asyncio.sleep(0.5)
        t_start = time.monotonic()
        stop_at[0] = t_start + seconds
        ready.set()
        await asyncio.gather(*jobs)
        elapsed = time.monotonic() - t_start
    finally:
        for c in clients:
            await c.aclose()
    return {"trips": trips, "leases": leases, "verdicts": verdicts, "errors": errors,
            "elapsed": elapsed}


def client_main() -> None:
    import asyncio

    args = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_client(args["base"], args["tokens"], args["seconds"],
                                         args["think_ms"], args["seed"]))))


def _row(r: dict[str, Any]) -> str:
    return (f"{r['moderators']:>4} {r['trips']:>7,} {r['rate']:>8.1f} {r['trip_p50']:>7.1f}ms "
            f"{r['trip_p99']:>7.1f}ms {r['lease_p50']:>8.1f}ms {r['lease_p99']:>8.1f}ms "
            f"{r['verdict_p50']:>10.1f}ms {r['verdict_p99']:>10.1f}ms")


HEADER = (f"{'mods':>4} {'trips':>7} {'trips/s':>8} {'trip p50':>9} {'trip p99':>9} "
          f"{'lease p50':>10} {'lease p99':>10} {'verdict p50':>12} {'verdict p99':>12}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moderators", default="1,8,32",
                    help="closed-loop levels (concurrent moderators), comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="per closed-loop level")
    ap.add_argument("--think-ms", default="1000,3000",
                    help="mean think times for the paced runs at the largest level, "
                         "comma-separated; empty to skip")
    ap.add_argument("--think-seconds", type=float, default=60.0, help="per paced run")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=30_000)
    args = ap.parse_args(argv)
    try:
        levels = [int(x) for x in args.moderators.split(",") if x]
        thinks = [float(x) for x in args.think_ms.split(",") if x]
    except ValueError:
        raise SystemExit("--moderators and --think-ms take comma-separated numbers") from None
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise SystemExit("--moderators: 1 to 256 each")
    if any(t <= 0 for t in thinks):
        raise SystemExit("--think-ms: positive mean think times (ms)")
    if not 0 < args.seconds <= 300 or not 0 < args.think_seconds <= 600:
        raise SystemExit("--seconds: up to 300; --think-seconds: up to 600")
    needed = int(sum(args.seconds * 400 for _ in levels)
                 + sum(args.think_seconds * max(levels) * 1000 / t for t in thinks))
    if args.tasks < needed:
        print(f"note: --tasks {args.tasks:,} may run out; about {needed:,} could be needed")

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
        base = f"http://127.0.0.1:{port}"
        try:
            print(f"uvicorn: {args.workers} workers on 127.0.0.1:{port}; the client runs in a "
                  "process of its own (asyncio, one connection per moderator)")
            print(f"\nclosed loop (no think time), {args.seconds:g}s per level:")
            print(HEADER)
            for n in levels:
                r = run_level(base, tokens[:n], args.seconds, 0.0)
                print(_row(r), flush=True)
                for e in r["errors"][:3]:
                    print(f"     error: {e}")
            for think in thinks:
                n = max(levels)
                print(f"\npaced: {n} moderators, think time per card exponential with mean "
                      f"{think:g} ms (random start), {args.think_seconds:g}s:")
                print(HEADER)
                r = run_level(base, tokens[:n], args.think_seconds, think)
                print(_row(r), flush=True)
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
    if sys.argv[1:] == ["--client"]:
        client_main()
    else:
        main()
