"""Server time of the threshold report page from its cache, with the per-request Apply /
Restore panel, and of the what-if with a cut-off of its own (the numbers behind the
interactive what-if page) (issue #14: the report < 500 ms from cache).

    .venv/bin/python bench/report_page.py [--items 400] [--requests 30]

Runs a small demo into a temporary directory (SQLite, offline), then times
``GET /reports/thresholds`` (first build, then cached) and
``GET /api/v1/calibration/what-if?cut=...`` through the TestClient
(in process: no network). Prints median and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--requests", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-report-"))
    os.environ.update({"QUORUM_DATABASE_URL": f"sqlite:///{tmp}/quorum.db",
                       "QUORUM_DATA_DIR": str(tmp / "data"), "HF_HUB_OFFLINE": "1"})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastapi.testclient import TestClient
    from rich.console import Console

    from backend.app import create_app
    from backend.demo import run_demo
    from backend.settings import get_settings

    t0 = time.perf_counter()
    run_demo(n_items=args.items, seed=3, moderated=min(args.items // 2, 200),
             console=Console(file=io.StringIO()))
    print(f"demo with {args.items} items: {time.perf_counter() - t0:.1f} s")
    from backend.db import session_scope
    from backend.users.service import get_user, issue_token

    with session_scope(get_settings().resolved_database_url) as s:
        token = issue_token(session=s, user=get_user(session=s, username="analyst"))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(database_url=get_settings().resolved_database_url)) as client:
        t0 = time.perf_counter()
        r = client.get("/reports/thresholds?fresh=1", headers=headers)
        assert r.status_code == 200, r.status_code
        print(f"report built: {1000 * (time.perf_counter() - t0):.0f} ms")
        for name, url in (("report from cache", "/reports/thresholds"),
                          ("API what-if with a cut-off",
                           "/api/v1/calibration/what-if?cut=fraud.high:0.8")):
            times = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                r = client.get(url, headers=headers)
                times.append(1000 * (time.perf_counter() - t0))
                assert r.status_code == 200, (url, r.status_code, r.text[:200])
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(f"{name}: median {statistics.median(times):.0f} ms, p95 {p95:.0f} ms "
                  f"({args.requests} requests)")


if __name__ == "__main__":
    main()
