"""Leasing from queues tied on (priority, day, chunk), PostgreSQL: one ``queue_id IN (…)``
query sorted over the whole group against one ``LATERAL … LIMIT 1`` per queue.

    .venv/bin/python bench/lease_tied.py [--pending 7550] [--queues 2] [--repeat 200]

Fills ``--queues`` queues of the same priority, day and chunk with ``--pending`` pending
tasks in all (confidences spread over 0.5–1), then times the statement that picks and
leases the best task both ways, alternated, each in a transaction that is rolled back
(the backlog stays the same), and prints the medians and p90s. The statements are the
ones ``backend.queues.service.lease_next`` runs (``_TAKE`` and ``_TAKE_TIED``).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database, median, percentile, use_database  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pending", type=int, default=7550)
    ap.add_argument("--queues", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args(argv)
    with bench_database("postgres") as url:
        use_database(url)
        from sqlalchemy import insert

        from backend.db import get_sessionmaker, utcnow
        from backend.items.models import Item
        from backend.migrate import upgrade
        from backend.queues import service
        from backend.queues.models import Queue, Task
        from backend.users.service import create_user

        upgrade(url)
        sessions = get_sessionmaker(url)
        now = utcnow()
        with sessions.begin() as s:
            user = create_user(session=s, username="bench", role="moderator",
                               queue_kinds=["*"])
            qs = [Queue(name=f"TIED{k}_{now.date()}", kind=f"TIED{k}", day=now.date(),
                        chunk=1, priority=82, audience="moderators",
                        total=args.pending // args.queues) for k in range(args.queues)]
            s.add_all(qs)
            s.flush()
            items = [{"source": "bench", "external_id": f"B{i}", "title": f"t{i}",
                      "content_hash": f"{i:064x}", "created_at": now, "updated_at": now}
                     for i in range(args.pending)]
            ids = [r[0] for r in s.execute(insert(Item).returning(Item.id), items)]
            s.execute(insert(Task), [
                {"queue_id": qs[i % args.queues].id, "item_id": item_id, "task_type": "item",
                 "state": "pending", "lease_count": 0, "created_at": now,
                 "confidence": 0.5 + (i * 7919 % 1000) / 2000}
                for i, item_id in enumerate(ids)])
            user_id, queue_ids = user.id, [q.id for q in qs]
        with sessions.begin() as s:
            s.execute(__import__("sqlalchemy").text("ANALYZE tasks"))
        params = {"user_id": user_id, "now": now, "task_types": ["item"],
                  "expires": now + timedelta(minutes=5), "queue_ids": queue_ids}
        ways = {"IN, sorted": service._TAKE[(True, True)],
                "LATERAL per queue": service._TAKE_TIED[True]}
        times: dict[str, list[float]] = {k: [] for k in ways}
        picked: dict[str, set[int]] = {k: set() for k in ways}
        for r in range(args.repeat + 10):
            for name, stmt in (ways.items() if r % 2 else reversed(ways.items())):
                s = sessions()
                try:
                    t0 = time.perf_counter()
                    task_id = s.scalars(stmt, params).first().id
                    elapsed = time.perf_counter() - t0
                finally:
                    s.rollback()
                    s.close()
                if r >= 10:  # warm-up
                    times[name].append(elapsed * 1000)
                    picked[name].add(task_id)
        for name, ms in times.items():
            print(f"{name:18s} median {median(ms):6.2f} ms, p90 {percentile(ms, 90):6.2f} ms "
                  f"({len(ms)} leases, {args.pending} pending in {args.queues} tied queues; "
                  f"picked task {sorted(picked[name])})")
        a, b = (median(times[k]) for k in ways)
        print(f"ratio (IN ÷ LATERAL), medians of one run: {a / b:.1f}×")


if __name__ == "__main__":
    main()
