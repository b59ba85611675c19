"""Neighbour lookup: latency (p50/p99, one query at a time) and recall@1 vs exact search.

    .venv/bin/python bench/ml_index.py --sizes 100000            # quick
    .venv/bin/python bench/ml_index.py --sizes 100000,1000000    # the target (build ~min)
    .venv/bin/python bench/ml_index.py --sizes 100000 --compare-libs   # usearch vs hnswlib

Vectors: MiniLM encodings of generated titles, grown by perturbation (see
``bench/ml_common.py``). Queries: near duplicates of indexed vectors. Ground truth:
:class:`ml.index.ExactIndex`. Built indexes are persisted under ``var/bench/`` and
reused on the next run. Target: p99 < 5 ms at 1M with recall@1 >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ml_common import CACHE, near_duplicate_queries, realistic_vectors  # noqa: E402

from ml.index import ExactIndex  # noqa: E402
from ml.index_hnsw import HnswIndex  # noqa: E402


def ground_truth(vectors: np.ndarray, queries: np.ndarray, *, tag: str) -> np.ndarray:
    path = CACHE / f"truth_{tag}.npy"
    if path.exists():
        return np.load(path)
    exact = ExactIndex(dim=vectors.shape[1])
    for start in range(0, len(vectors), 200_000):
        chunk = np.asarray(vectors[start : start + 200_000])
        exact.add(np.arange(start, start + len(chunk)), chunk)
    started = time.perf_counter()
    ids, _ = exact.search(queries, 1)
    print(f"  exact search, {len(queries)} queries: {time.perf_counter() - started:.2f}s")
    np.save(path, ids[:, 0])
    return ids[:, 0]


def latencies_ms(search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query wall time in ms and the top-1 ids, querying one vector at a time."""
    times = np.empty(len(queries))
    top = np.empty(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        started = time.perf_counter()
        ids = search(q[None, :])
        times[i] = (time.perf_counter() - started) * 1e3
        top[i] = ids[0]
    return times, top


def report(name: str, times: np.ndarray, top: np.ndarray, truth: np.ndarray) -> None:
    recall = float(np.mean(top == truth))
    print(
        f"  {name:<28} p50 {np.percentile(times, 50):6.3f} ms  p99 "
        f"{np.percentile(times, 99):6.3f} ms  recall@1 {recall:.4f}"
    )


def run_hnsw(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, n: int, ef_search: list[int]
) -> None:
    path = CACHE / f"hnsw_{n}"
    if (path / "meta.json").exists():
        started = time.perf_counter()
        index = HnswIndex.load(path)
        print(f"  loaded HnswIndex from {path} in {time.perf_counter() - started:.1f}s")
    else:
        index = HnswIndex(dim=vectors.shape[1])
        started = time.perf_counter()
        for start in range(0, n, 100_000):
            chunk = np.asarray(vectors[start : min(n, start + 100_000)])
            index.add(np.arange(start, start + len(chunk)), chunk)
        print(f"  built HnswIndex ({n} vectors) in {time.perf_counter() - started:.1f}s")
        index.save(path)
    for ef in ef_search:
        index.ef_search = ef
        times, top = latencies_ms(lambda q: index.search(q, 1)[0][0], queries)
        report(f"HnswIndex ef={ef}", times, top, truth)


def compare_libs(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, n: int) -> None:
    """Raw usearch vs hnswlib, same graph parameters (M=16, ef_construction=128, ef=64)."""
    import hnswlib
    from usearch.index import Index

    data = np.ascontiguousarray(vectors[:n])
    keys = np.arange(n)
    started = time.perf_counter()
    u = Index(
        ndim=data.shape[1],
        metric="ip",
        dtype="f32",
        connectivity=16,
        expansion_add=128,
        expansion_search=64,
    )
    u.add(keys.astype(np.uint64), data)
    print(f"  usearch build: {time.perf_counter() - started:.1f}s")
    times, top = latencies_ms(lambda q: u.search(q, 1).keys[0:1].astype(np.int64), queries)
    report("usearch f32 ef=64", times, top, truth)

    started = time.perf_counter()
    h = hnswlib.Index(space="ip", dim=data.shape[1])
    h.init_index(max_elements=n, ef_construction=128, M=16)
    h.add_items(data, keys)
    h.set_ef(64)
    print(f"  hnswlib build: {time.perf_counter() - started:.1f}s")
    times, top = latencies_ms(lambda q: h.knn_query(q, k=1)[0][0].astype(np.int64), queries)
    report("hnswlib f32 ef=64", times, top, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", default="32,64,128", help="ef_search values to report")
    parser.add_argument("--compare-libs", action="store_true")
    parser.add_argument("--quick", action="store_true", help="= --sizes 100000")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    ef_search = [int(e) for e in args.ef.split(",")]
    for n in sizes:
        print(f"== {n:,} vectors ==")
        vectors = realistic_vectors(n)
        queries, _ = near_duplicate_queries(vectors, args.queries)
        truth = ground_truth(vectors, queries, tag=f"{n}_{args.queries}")
        if args.compare_libs:
            compare_libs(vectors, queries, truth, n=n)
        run_hnsw(vectors, queries, truth, n=n, ef_search=ef_search)


if __name__ == "__main__":
    main()
