"""The moderators' capacity accounting (`backend.queues.overflow.capacity`) on a large
tasks table, PostgreSQL: with and without the ``(state, done_at)`` index of migration 0024.

    .venv/bin/python bench/capacity_accounting.py [--tasks 300000]

Fills one moderator queue with ``--tasks`` tasks (1% pending, 1 in 30 of the others done
today, the rest three days ago), then times ``capacity()`` 15 times with the index and 15
without it (dropped) and prints the medians. Each rebalance — after every routing
transaction that queued an overflowable kind — starts with this accounting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from bench.common import bench_database, median, use_database  # noqa: E402

ITEMS = text(
    "INSERT INTO items (source, external_id, title, description, is_new, is_golden, "
    "metadata, content_hash, created_at, updated_at) SELECT 'b', 'e' || g, 't', '', false, "
    "false, '{}', md5(g::text) || md5(g::text), now(), now() FROM generate_series(1, :n) g")
TASKS = text(
    "INSERT INTO tasks (queue_id, item_id, task_type, state, lease_count, created_at, "
    "done_at, confidence) SELECT :q, id, 'item', "
    "CASE WHEN id % 100 = 0 THEN 'pending' ELSE 'done' END, 1, now(), "
    "CASE WHEN id % 100 = 0 THEN NULL WHEN id % 30 = 0 THEN now() "
    "ELSE now() - interval '3 days' END, 0.5 FROM items")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=300_000)
    args = ap.parse_args(argv)
    with bench_database("postgres") as url:
        use_database(url)
        from backend.db import get_sessionmaker, utcnow
        from backend.migrate import upgrade
        from backend.queues.models import Queue
        from backend.queues.overflow import capacity
        from backend.settings import get_settings

        upgrade(url)
        sessions = get_sessionmaker(url)
        now = utcnow()
        with sessions.begin() as s:
            q = Queue(name="ML_BAD_MIDDLE_bench", kind="ML_BAD_MIDDLE", day=now.date(),
                      chunk=1, priority=66, audience="moderators", total=0)
            s.add(q)
            s.flush()
            s.execute(ITEMS, {"n": args.tasks})
            s.execute(TASKS, {"q": q.id})
            s.execute(text("ANALYZE tasks"))
        settings = get_settings().model_copy(update={
            "moderator_daily_capacity": 1000, "moderator_overflow_from": ["ML_BAD_MIDDLE"]})
        for label, drop in (("with ix_tasks_state_done_at", False), ("without it", True)):
            if drop:
                with sessions.begin() as s:
                    s.execute(text("DROP INDEX ix_tasks_state_done_at"))
                    s.execute(text("ANALYZE tasks"))
            times = []
            for _ in range(15):
                with sessions() as s:
                    t0 = time.perf_counter()
                    c = capacity(session=s, settings=settings, now=now)
                    times.append((time.perf_counter() - t0) * 1000)
            print(f"{label}: capacity() median {median(times):.1f} ms over {args.tasks:,} "
                  f"tasks ({c.done_today:,} done today)")


if __name__ == "__main__":
    main()
