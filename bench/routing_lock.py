"""How long a moderator's write waits while routing embeds a backlog, SQLite (the embedded
default), ML on.

    .venv/bin/python bench/routing_lock.py [--items 1000] [--batch 200] [--encoder minilm]
                                          [--compare DIR]

A fresh SQLite database holds ``--items`` demo-like items, all ``received`` and none
embedded. One thread routes the backlog (``jobs.stages.route_backlog``, ``--batch`` items
per routing transaction: the in-process worker's loop) with the ``--encoder`` encoder;
meanwhile the main thread plays a moderator: every 20 ms one short write transaction (as a
verdict's, ``BEGIN IMMEDIATE`` … ``COMMIT``) on an item outside the backlog, timed from
begin to commit. Prints the write's p50 / p99 / max while routing ran, the routing rate,
and the longest wait against the time the encoder took per batch.

``--compare DIR`` first runs the same with the code of another checkout (say an older
``main``), then with this one: before and after in one run, on the same machine state.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import use_code  # noqa: E402

CODE = use_code()  # ``--code DIR``: import ``backend`` from another checkout (``--compare``)

from bench.common import (  # noqa: E402
    bench_database,
    code_options,
    compare_first,
    median,
    percentile,
    use_database,
)


def rows(n: int, start: int = 0) -> list[dict]:
    words = ["lamp", "phone", "sofa", "bike", "watch", "shoes", "camera", "desk", "kettle"]
    return [{"source": "bench", "external_id": f"L{start + i}",
             "title": f"{words[i % len(words)]} {i} in good condition, barely used",
             "description": f"second-hand {words[(i * 7) % len(words)]}, model {i % 97}, "
                            "collect in person or shipped within the week",
             "price": 5.0 + (i % 300), "currency": "USD", "seller_id": f"S{i % 211}",
             "category": "home", "is_new": bool(i % 3)} for i in range(n)]


def run(items: int, batch: int) -> None:
    from sqlalchemy import text

    import backend
    from backend.db import get_engine, get_sessionmaker, session_scope
    from backend.items.service import ingest
    from backend.jobs import stages
    from backend.ml_adapter.service import get_encoder
    from backend.policy import get_policy
    from backend.settings import get_settings
    from ml.inputs import ItemInput

    with bench_database("sqlite") as url:
        use_database(url)
        settings, policy = get_settings(), get_policy()
        with session_scope(url) as s:
            _, [probe] = ingest(session=s, rows=[{**rows(1)[0], "external_id": "probe"}],
                                policy=policy)
        stages.route_backlog(sessions=get_sessionmaker(url), settings=settings,
                             batch_size=10)  # the probe item routed; torch, encoder loaded
        with session_scope(url) as s:
            ingest(session=s, rows=rows(items), policy=policy)
        enc = get_encoder()
        sample = [ItemInput(title=r["title"], description=r["description"])
                  for r in rows(min(batch, items))]
        t0 = time.perf_counter()
        enc.encode(sample, batch_size=64)
        encode_s = time.perf_counter() - t0

        done = threading.Event()
        routed: dict[str, float] = {}

        def route() -> None:
            t = time.perf_counter()
            s = stages.route_backlog(sessions=get_sessionmaker(url), settings=settings,
                                     batch_size=batch)
            routed.update(items=s.items, seconds=time.perf_counter() - t)
            done.set()

        waits: list[float] = []
        engine = get_engine(url)
        worker = threading.Thread(target=route, daemon=True)
        worker.start()
        while not done.is_set():
            t = time.perf_counter()
            with engine.begin() as conn:  # BEGIN IMMEDIATE: the write lock, as a verdict
                conn.execute(text("UPDATE items SET title = title WHERE id = :id"),
                             {"id": probe})
            waits.append((time.perf_counter() - t) * 1000)
            time.sleep(0.02)
        worker.join()
        ms = [w for w in waits]
        print(f"code {Path(backend.__file__).parent.parent}: {routed['items']} items routed "
              f"in {routed['seconds']:.1f} s ({routed['items'] / routed['seconds']:.1f} "
              f"items/s, {batch}/transaction, encoder {enc.encoder_id}); a moderator's "
              f"write meanwhile ({len(ms)} writes): p50 {median(ms):.1f} ms, p99 "
              f"{percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms; the encoder alone "
              f"takes {encode_s * 1000:.0f} ms per batch of {len(sample)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--encoder", default="minilm")
    code_options(ap)
    args = ap.parse_args()
    os.environ.update({"QUORUM_ML_ENABLED": "true", "QUORUM_ML_ENCODER": args.encoder,
                       "QUORUM_ML_INDEX_KIND": "exact"})
    compare_first(__file__, args.compare, ["--items", str(args.items), "--batch",
                                           str(args.batch), "--encoder", args.encoder])
    run(args.items, args.batch)


if __name__ == "__main__":
    main()
