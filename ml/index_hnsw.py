"""Approximate cosine search with HNSW (hnswlib), persisted and grown in place.

Why hnswlib and not usearch: measured on this project's realistic vectors (MiniLM
384-d, 100k, 2 CPU cores, M=16, ef_construction=128, ef_search=64;
``bench/ml_index.py --compare-libs``): hnswlib built in 19–22 s vs usearch 39–46 s
(f32) / 34 s (f16), answered one query in p50 0.10 ms / p99 0.18 ms vs 0.26 / 0.37 ms
(usearch f16: p50 0.16 ms but p99 4.2 ms), both at recall@1 = 1.0. hnswlib also updates
an existing label in place (our "re-adding an id replaces it") and un-deletes a
tombstoned one, which usearch's high-level wrapper refuses. What we give up: usearch's
f16/i8 storage (half/quarter the memory). See ``docs/ml.md`` for the full figures.

Layout of a saved index directory: ``index.hnsw`` (hnswlib's graph + vectors),
``ids.npy`` (live ids), ``deleted.npy`` (tombstoned ids still in the graph) and
``meta.json`` (kind, dim, encoder_id, graph parameters, capacity, library version).

Removal marks a tombstone (hnswlib ``mark_deleted``): the vector stays in the graph,
is never returned, and is revived and overwritten if the id is added again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import hnswlib
import numpy as np

from ml.index import RWLock, check_batch, read_meta, write_meta

__all__ = ["HnswIndex"]


class HnswIndex:
    """HNSW over inner product on unit vectors; distance = ``1 - dot`` (cosine distance).

    ``M`` and ``ef_construction`` fix the graph quality at build time; ``ef_search`` is
    the query-time breadth (raised to ``k`` when ``k`` is larger). Capacity doubles as
    vectors are added, so the index grows without a rebuild.
    """

    kind = "hnsw"

    def __init__(
        self,
        *,
        dim: int,
        encoder_id: str | None = None,
        M: int = 16,  # noqa: N803 - the name the HNSW paper and every library use
        ef_construction: int = 128,
        ef_search: int = 64,
        initial_capacity: int = 1024,
        num_threads: int = -1,
    ) -> None:
        self.dim = dim
        self.encoder_id = encoder_id
        self.M = M
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self.num_threads = num_threads
        self._lock = RWLock()
        self._live: set[int] = set()
        self._deleted: set[int] = set()
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=max(1, initial_capacity), ef_construction=ef_construction, M=M
        )
        self._index.set_ef(ef_search)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        with self._lock.write():
            self._ef_search = int(value)
            self._index.set_ef(self._ef_search)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, int | np.integer) and int(id_) in self._live

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        with self._lock.write():
            new_slots = sum(
                1 for i in ids.tolist() if i not in self._live and i not in self._deleted
            )
            needed = int(self._index.get_current_count()) + new_slots
            if needed > self.capacity:
                self._index.resize_index(max(needed, 2 * self.capacity))
            for id_ in ids.tolist():
                if id_ in self._deleted:  # revive the tombstone; add_items then overwrites it
                    self._index.unmark_deleted(id_)
                    self._deleted.discard(id_)
            self._index.add_items(vectors, ids.astype(np.uint64), num_threads=self.num_threads)
            self._live.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> int:
        removed = 0
        with self._lock.write():
            for id_ in np.asarray(ids, dtype=np.int64).ravel().tolist():
                if id_ in self._live:
                    self._index.mark_deleted(id_)
                    self._live.discard(id_)
                    self._deleted.add(id_)
                    removed += 1
        return removed

    def _query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # hnswlib searches with max(ef_search, k), so a large k needs no ef change here
        try:
            labels, dist = self._index.knn_query(queries, k=k, num_threads=self.num_threads)
            return labels.astype(np.int64), dist.astype(np.float32)
        except RuntimeError:  # fewer than k reachable (tombstones): shrink k row by row
            labels = np.full((len(queries), k), -1, dtype=np.int64)
            dist = np.full((len(queries), k), np.inf, dtype=np.float32)
            for row, query in enumerate(queries):
                for kk in range(k - 1, 0, -1):
                    try:
                        found, d = self._index.knn_query(query[None, :], k=kk, num_threads=1)
                    except RuntimeError:
                        continue
                    labels[row, :kk], dist[row, :kk] = found[0], d[0]
                    break
            return labels, dist

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, queries = check_batch(None, vectors, self.dim)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        with self._lock.read():
            k_found = min(k, len(self._live))
            if k_found <= 0 or not len(queries):
                return out_ids, out_dist
            labels, dist = self._query(queries, k_found)
        out_ids[:, :k_found] = labels
        out_dist[:, :k_found] = np.where(labels >= 0, dist, np.inf)
        return out_ids, out_dist

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            self._index.save_index(str(path / "index.hnsw"))
            np.save(
                path / "ids.npy", np.fromiter(self._live, dtype=np.int64, count=len(self._live))
            )
            np.save(
                path / "deleted.npy",
                np.fromiter(self._deleted, dtype=np.int64, count=len(self._deleted)),
            )
            write_meta(
                path,
                {
                    "kind": self.kind,
                    "dim": self.dim,
                    "encoder_id": self.encoder_id,
                    "size": len(self._live),
                    "library": "hnswlib",
                    "space": "ip",
                    "M": self.M,
                    "ef_construction": self.ef_construction,
                    "ef_search": self._ef_search,
                    "capacity": self.capacity,
                },
            )

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str | None = None) -> Self:
        path = Path(path)
        meta = read_meta(path, kind=cls.kind, encoder_id=encoder_id)
        index = cls(
            dim=int(meta["dim"]),
            encoder_id=meta.get("encoder_id"),
            M=int(meta["M"]),
            ef_construction=int(meta["ef_construction"]),
            ef_search=int(meta["ef_search"]),
            initial_capacity=1,
        )
        index._index = hnswlib.Index(space="ip", dim=index.dim)
        index._index.load_index(str(path / "index.hnsw"), max_elements=int(meta["capacity"]))
        index._index.set_ef(index._ef_search)
        index._live = set(np.load(path / "ids.npy").tolist())
        index._deleted = set(np.load(path / "deleted.npy").tolist())
        return index
