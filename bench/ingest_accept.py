"""Ingest acceptance and end-to-end routing through the job engine, PostgreSQL, ML on.

    .venv/bin/python bench/ingest_accept.py [--items 20000] [--e2e-items 2000]
                                            [--batch 1000] [--workers 1,2]
                                            [--encoder minilm] [--threads N]
                                            [--concurrency N] [--repeat N]
                                            [--compare DIR] [--accept-only]

1. **Acceptance**: ``POST /api/v1/items`` (in-process ASGI client, batches of
   ``--batch``, ``wait=false``) with ML on: each call validates, stores the items
   ``received`` and defers their ``route`` jobs in its transaction, and answers before
   anything is embedded. Prints items/s accepted.
2. **End to end**, for each worker count in ``--workers``: a fresh database, N
   ``quorum worker --queues embed`` processes, each running ``--concurrency`` jobs at
   once (default: the product's ``QUORUM_JOBS_WORKER_CONCURRENCY``, 2), started and
   registered (each loads its encoder before taking a job) and warmed on a first small
   batch, then ``--e2e-items`` accepted at once
   and the time until every item is routed (embedded, scored, decided or queued).
   Prints items/s and its ratio to the **bare encoder** on the same items (this process,
   ``encoder.encode`` in ``QUORUM_ML_BATCH_SIZE`` batches, one thread per worker's share
   of the cores not pinned).

``--compare DIR`` first runs the acceptance part with the code of another checkout (say
``main``) in a subprocess, then with this one: before and after in one run, on the same
machine state. ``--threads`` is each worker's torch threads (default: the cores divided
among the workers; two torch processes each using every core only fight over them).

Each run uses a database of its own (``bench/common.py``). Figures are from a shared
machine unless it is quiet: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import use_code  # noqa: E402

CODE = use_code()  # ``--code DIR``: import ``backend`` from another checkout (``--compare``)
from bench.common import (  # noqa: E402
    ROOT,
    bench_database,
    code_options,
    compare_first,
    use_database,
)


def rows(n: int, start: int = 0) -> list[dict]:
    words = ["lamp", "phone", "sofa", "bike", "watch", "shoes", "camera", "desk", "kettle"]
    return [{"source": "bench", "external_id": f"B{start + i}",
             "title": f"{words[i % len(words)]} {i} in good condition",
             "description": f"second-hand {words[(i * 7) % len(words)]}, model {i % 97}",
             "price": 5.0 + (i % 300), "currency": "USD", "seller_id": f"S{i % 211}",
             "category": "home", "is_new": bool(i % 3)} for i in range(n)]


def client_and_token(url: str):  # noqa: ANN201
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.db import session_scope
    from backend.users.service import create_user, issue_token

    with session_scope(url) as s:
        token = issue_token(session=s, user=create_user(session=s, username="bench",
                                                        role="analyst"))
    return TestClient(create_app(database_url=url)), {"Authorization": f"Bearer {token}"}


def accept(client, headers: dict, items: list[dict], batch: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        r = client.post("/api/v1/items?wait=false", json=items[start:start + batch],
                        headers=headers)
        assert r.status_code == 200 and not r.json()["routed"], r.text
    return time.perf_counter() - t0


def received(url: str) -> int:
    from sqlalchemy import func, select

    from backend.db import session_scope
    from backend.decisions.models import ItemStatus

    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(ItemStatus)
                        .where(ItemStatus.state == "received")) or 0


def wait_until(done: Callable[[], bool], timeout: float, failure: str) -> None:
    """Poll ``done`` every 0.2 s; exit with ``failure`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.2)


def wait_routed(url: str, timeout: float = 3600) -> None:
    wait_until(lambda: not received(url), timeout, "timed out waiting for the workers")


def registered_workers(url: str) -> int:
    from sqlalchemy import text

    from backend.db import session_scope

    with session_scope(url) as s:
        return s.scalar(text("SELECT count(*) FROM procrastinate_workers")) or 0


def wait_workers(url: str, n: int, timeout: float = 600) -> None:
    """Until ``n`` workers have registered with procrastinate (after their warm-up)."""
    wait_until(lambda: registered_workers(url) >= n, timeout,
               f"{n} workers did not start within {timeout:.0f} s")


def bare_encoder_rate(items: list[dict]) -> float:
    from backend.ml_adapter.service import get_encoder, item_inputs
    from backend.ml_adapter.settings import get_ml_settings

    ml = get_ml_settings()
    enc = get_encoder(ml)
    inputs = item_inputs(items)
    enc.encode(inputs[:ml.batch_size], batch_size=ml.batch_size)  # warm-up
    t0 = time.perf_counter()
    enc.encode(inputs, batch_size=ml.batch_size)
    return len(items) / (time.perf_counter() - t0)


def end_to_end(n_workers: int, n_items: int, batch: int, tmp: Path,
               threads: int | None = None, jobs_at_once: int | None = None) -> float:
    concurrency = ["--concurrency", str(jobs_at_once)] if jobs_at_once else []
    with bench_database("postgres") as url:
        use_database(url, tmp / f"var{n_workers}")
        client, headers = client_and_token(url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "QUORUM_DATABASE_URL": url,
               "QUORUM_DATA_DIR": str(tmp / f"var{n_workers}")}
        threads = threads or max(1, (os.cpu_count() or 1) // n_workers)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        procs = [subprocess.Popen([sys.executable, "-m", "backend.cli", "worker", "--queues",
                                   "embed", *concurrency, "--name", f"bench{i}"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(n_workers)]
        try:
            wait_workers(url, n_workers)  # each has loaded its encoder (`quorum worker`)
            accept(client, headers, rows(20 * n_workers, start=10**7), 20)  # warm-up
            wait_routed(url)
            t0 = time.perf_counter()
            accept(client, headers, rows(n_items), batch)
            wait_routed(url)
            took = time.perf_counter() - t0
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(60)
            client.close()
    return n_items / took


def acceptance(items: int, batch: int, tmp: Path) -> tuple[float, int]:
    """Items/s accepted over ``items`` (after a warm-up call), and how many stayed received."""
    with bench_database("postgres") as url:
        use_database(url, tmp / "var")
        client, headers = client_and_token(url)
        accept(client, headers, rows(batch, start=10**8), batch)  # warm-up
        took = accept(client, headers, rows(items), batch)
        client.close()
        return items / took, received(url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--e2e-items", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--repeat", type=int, default=1,
                    help="end-to-end runs per worker count (the median ratio is printed)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="jobs each worker runs at once (default: the product's setting)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per worker (default: cores / workers)")
    code_options(ap, "measure acceptance")
    ap.add_argument("--accept-only", action="store_true", help="skip the end-to-end part")
    args = ap.parse_args()
    os.environ.update({"QUORUM_ML_ENABLED": "true", "QUORUM_ML_ENCODER": args.encoder,
                       "QUORUM_ML_INDEX_KIND": "exact", "QUORUM_JOBS_INGEST_WAIT": "false"})
    compare_first(__file__, args.compare,
                  ["--accept-only", "--items", str(args.items), "--batch", str(args.batch)])
    import tempfile

    import backend

    with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmpdir:
        tmp = Path(tmpdir)
        rate, waiting = acceptance(args.items, args.batch, tmp)
        print(f"acceptance (PostgreSQL, ML on, {args.batch}/call, code "
              f"{Path(backend.__file__).parent.parent}): {args.items} items at "
              f"{rate:,.0f} items/s accepted; {waiting:,} received, none embedded before "
              "the answer", flush=True)
        if args.accept_only:
            return
        for n in (int(w) for w in args.workers.split(",") if w):
            ratios = []
            for _ in range(args.repeat):
                # the bare encoder right before and right after: the same machine state
                before = bare_encoder_rate(rows(args.e2e_items))
                rate = end_to_end(n, args.e2e_items, args.batch, tmp, args.threads,
                                  args.concurrency)
                bare = (before + bare_encoder_rate(rows(args.e2e_items))) / 2
                ratios.append(rate / bare)
                print(f"bare encoder ({args.encoder}, this process, all cores, mean of "
                      f"before and after): {bare:,.1f} items/s; end to end, {n} worker(s): "
                      f"{args.e2e_items} items in {args.e2e_items / rate:.1f} s = "
                      f"{rate:,.1f} items/s ({rate / bare:.2f} × the bare encoder)",
                      flush=True)
            if len(ratios) > 1:
                print(f"{n} worker(s): median {statistics.median(ratios):.2f} × the bare "
                      f"encoder over {len(ratios)} runs "
                      f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)


if __name__ == "__main__":
    main()
