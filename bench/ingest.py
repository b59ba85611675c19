"""Ingest + route throughput: synthetic items through ``ingest`` and ``route_items``.

    .venv/bin/python bench/ingest.py [--items 100000] [--batch 10000]
                                     [--backend sqlite|postgres|both] [--profile FILE]

Like ``quorum ingest``: one transaction per batch of ``--batch`` rows (validate, store,
route the new items with the demo rules; no similarity or classifier hooks, no images),
on a fresh database per backend. Prints items/s per batch (median) and overall, the
outcome mix, and the peak RSS growth of the process during the run.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database, maxrss_mib, median, use_database  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(backend: str, rows: list[dict[str, Any]], batch: int,
        profile: str | None = None) -> dict[str, Any]:
    from backend.db import refresh_statistics, session_scope, utcnow
    from backend.items.service import ingest
    from backend.policy import get_policy
    from backend.routing.hooks import NoopHooks, set_pipeline_hooks
    from backend.routing.pipeline import route_items
    from backend.rules.service import load_rules_file
    from backend.settings import get_settings

    with bench_database(backend) as url:
        use_database(url)
        settings, policy = get_settings(), get_policy()
        set_pipeline_hooks(NoopHooks())  # rules only: no similarity, no classifier
        with session_scope(url) as s:
            load_rules_file(session=s, path=ROOT / "backend/defaults/rules.yaml", policy=policy)
        rates: list[float] = []
        queued: Counter[str] = Counter()
        decided: Counter[str] = Counter()
        created = 0
        gc.collect()
        rss0 = maxrss_mib()
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            tb = time.perf_counter()
            with session_scope(url) as s:
                now = utcnow()
                result, ids = ingest(session=s, rows=chunk, policy=policy, partial=True, now=now)
                summary = route_items(session=s, item_ids=ids, now=now, settings=settings)
            refresh_statistics(url)  # as `quorum ingest` does between batches
            rates.append(len(chunk) / (time.perf_counter() - tb))
            created += result.created
            queued.update(summary.queued)
            decided.update(summary.labels)
        elapsed = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
            prof.dump_stats(f"{profile}.{backend}")
        return {"backend": backend, "items": len(rows), "created": created,
                "elapsed_s": elapsed, "overall": len(rows) / elapsed,
                "median": median(rates), "batches": rates,
                "rss_growth_mib": maxrss_mib() - rss0, "queued": dict(queued),
                "decided": dict(decided)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", help="write cProfile stats to FILE.<backend>")
    args = ap.parse_args(argv)

    from backend.demo.generator import generate

    t = time.perf_counter()
    rows = generate(args.items, seed=args.seed).rows
    print(f"generated {len(rows):,} items in {time.perf_counter() - t:.1f}s "
          f"(no images; batch {args.batch:,} per transaction; demo rules, no ML hooks)")
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    for backend in backends:
        r = run(backend, rows, args.batch, args.profile)
        print(f"\n[{backend}] {r['items']:,} items, {r['created']:,} created in "
              f"{r['elapsed_s']:.1f}s")
        print(f"  items/s: median of batches {r['median']:,.0f}, overall {r['overall']:,.0f}"
              f"  (batches: {', '.join(f'{x:,.0f}' for x in r['batches'])})")
        print(f"  peak RSS growth during the run: {r['rss_growth_mib']:.0f} MiB")
        print("  queued: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["queued"].items())))
        print("  decided: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["decided"].items())))


if __name__ == "__main__":
    main()
