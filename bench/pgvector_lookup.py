"""Neighbour lookup through pgvector (HNSW) — p50/p99 latency and recall@1 vs exact search.

Same realistic vectors, near-duplicate queries and ground truth as ``bench/ml_index.py``
(``bench/ml_common.py``, cached under ``$QUORUM_BENCH_CACHE``), stored in ``item_vectors``
of a fresh database migrated to head, searched through ``backend.ml_adapter.pgvector.
PgVectorStore`` (the per-encoder HNSW expression index, ``ef_search`` 100), one query at a
time as the routing hook does. The server: ``QUORUM_BENCH_PGVECTOR_URL``, else the
machine's PostgreSQL if it has pgvector, else an embedded PostgreSQL 18 with pgvector.

    .venv/bin/python bench/pgvector_lookup.py [--size 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ml_common import near_duplicate_queries, realistic_vectors  # noqa: E402
from ml_index import ground_truth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    import psycopg
    from sqlalchemy import text

    from backend.db import dispose_engines, get_sessionmaker
    from backend.migrate import upgrade
    from backend.ml_adapter.pgvector import PgVectorStore
    from tests.pg import (
        create_database,
        drop_database,
        embedded_server_url,
        has_pgvector,
        server_url,
    )

    server = os.environ.get("QUORUM_BENCH_PGVECTOR_URL") or server_url()
    if not has_pgvector(server):
        server = embedded_server_url()
    url = create_database(server, prefix="quorum_bench_vec")
    try:
        upgrade(url)
        vectors = np.asarray(realistic_vectors(args.size), dtype=np.float32)
        queries, _ = near_duplicate_queries(vectors, 1000)
        truth = ground_truth(vectors, queries, tag=f"{args.size}_1000")[:args.queries]
        queries = queries[:args.queries]
        encoder_id, dim = "bench:minilm-like", vectors.shape[1]
        started = time.perf_counter()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            with conn.cursor() as cur, cur.copy(
                    "COPY items (id, source, external_id, title, description, metadata, "
                    "is_new, is_golden, content_hash, created_at, updated_at) FROM STDIN") as cp:
                for i in range(len(vectors)):
                    cp.write_row((i + 1, "bench", str(i), "", "", "{}", False, False, "",
                                  "2026-11-24T00:00:00Z", "2026-11-24T00:00:00Z"))
            with conn.cursor() as cur, cur.copy(
                    "COPY item_vectors (item_id, encoder_id, embedding) FROM STDIN") as cp:
                for i, v in enumerate(vectors):
                    buf = io.StringIO()
                    buf.write("[")
                    buf.write(",".join(f"{x:.6g}" for x in v))
                    buf.write("]")
                    cp.write_row((i + 1, encoder_id, buf.getvalue()))
        print(f"{len(vectors):,} vectors loaded in {time.perf_counter() - started:.1f} s")
        factory = get_sessionmaker(url)
        started = time.perf_counter()
        with factory.begin() as s:
            s.execute(text("SET maintenance_work_mem = '1GB'"))
            PgVectorStore(s, encoder_id=encoder_id, dim=dim).ensure_index()
        print(f"HNSW index built in {time.perf_counter() - started:.1f} s")
        times = np.empty(len(queries))
        top = np.empty(len(queries), dtype=np.int64)
        with factory() as s:
            store = PgVectorStore(s, encoder_id=encoder_id, dim=dim)
            store.search(queries[:5], 1)  # warm up
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                ids, _ = store.search(q[None, :], 1)
                times[i] = (time.perf_counter() - t0) * 1e3
                top[i] = ids[0, 0] - 1
            s.rollback()
        recall = float(np.mean(top == truth))
        print(f"pgvector HNSW, {len(vectors):,} vectors, {len(queries)} queries: "
              f"p50 {np.median(times):.2f} ms, p99 {np.percentile(times, 99):.2f} ms, "
              f"recall@1 {recall:.4f}")
    finally:
        dispose_engines()
        drop_database(server, url)


if __name__ == "__main__":
    main()
