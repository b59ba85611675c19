"""Shared helpers for the service benchmarks (``bench/ingest.py``, ``bench/lease.py``).

Each run works in a database of its own: a fresh SQLite file under a temporary
directory, or a fresh PostgreSQL database ``quorum_bench_<random>`` on the server named
by ``QUORUM_BENCH_POSTGRES_URL`` (default: the local server on 127.0.0.1:5432), dropped
at the end. Nothing here touches the user's ``var/`` database.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- --code / --compare
# A benchmark that compares with another checkout starts with (before importing backend):
#
#     sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
#     from bench.common import use_code
#     CODE = use_code()
#
# and in main(): ``code_options(ap)``, then ``compare_first(__file__, args.compare, [...])``.
# Nothing here imports ``backend`` at import time, so ``use_code`` decides where it comes from.
def use_code(argv: Sequence[str] | None = None) -> Path:
    """``--code DIR`` on the command line: import ``backend`` from that checkout (this
    one's otherwise); also keeps Hugging Face offline. Returns the checkout's root."""
    argv = list(sys.argv if argv is None else argv)
    code = Path(argv[argv.index("--code") + 1]).resolve() if "--code" in argv else ROOT
    for path in (ROOT, code):
        if str(path) in sys.path:
            sys.path.remove(str(path))
        sys.path.insert(0, str(path))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return code


def code_options(ap: argparse.ArgumentParser, what: str = "measure") -> None:
    """``--compare DIR`` (first run the same with another checkout's code) and the
    internal ``--code DIR`` it passes on."""
    ap.add_argument("--compare", metavar="DIR",
                    help=f"first {what} with the code of this checkout")
    ap.add_argument("--code", metavar="DIR", help=argparse.SUPPRESS)


def compare_first(script: str, compare: str | None, args: Sequence[str]) -> None:
    """With ``--compare DIR``: run ``script`` with ``--code DIR`` and ``args`` first."""
    if compare:
        subprocess.run([sys.executable, script, "--code", compare, *args], check=True)

POSTGRES_SERVER = os.environ.get("QUORUM_BENCH_POSTGRES_URL",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, dbname: str) -> str:
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + dbname + ("?" + query if query else "")


@contextmanager
def bench_database(backend: str) -> Iterator[str]:
    """A migrated, empty database URL for one benchmark run (removed afterwards)."""
    from backend.db import dispose_engines
    from backend.migrate import upgrade

    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            upgrade(url)
            try:
                yield url
            finally:
                dispose_engines()
        return
    if backend != "postgres":
        raise SystemExit(f"unknown backend {backend!r}")
    import psycopg

    name = f"quorum_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(POSTGRES_SERVER), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(POSTGRES_SERVER, name)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with psycopg.connect(_plain(POSTGRES_SERVER), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_database(url: str, data_dir: Path | None = None) -> None:
    """Point ``get_settings()`` at ``url`` for this process."""
    from backend.settings import get_settings

    os.environ["QUORUM_DATABASE_URL"] = url
    if data_dir is not None:
        os.environ["QUORUM_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
