"""Vector indexes for neighbour lookup: the :class:`VectorIndex` protocol, exact search, factory.

Contract shared by every index:

* ids are non-negative ``int64``; vectors are L2-normalised float32 rows of width ``dim``;
* ``add`` grows the index in place, and re-adding an id replaces its vector;
* ``search(vectors, k)`` returns ``(ids [n, k] int64, distances [n, k] float32)``, nearest
  first, where distance is the **cosine distance** ``1 - dot`` (0 = same direction, 2 =
  opposite); rows are padded with id ``-1`` and distance ``inf`` when fewer than ``k``
  vectors exist;
* ``save(path)`` writes a directory (index data + ``meta.json`` sidecar) and
  ``load(path)`` reads it back; a loaded index can keep growing without a rebuild;
* searches may run from many threads at once; writers take an exclusive lock.

``meta.json`` records the ``encoder_id`` the vectors came from, and ``load(path,
encoder_id=...)`` refuses an index built by another encoder.

:class:`ExactIndex` is brute force (chunked matmul), exact, and fine to ~100k vectors
or for ground truth; :class:`ml.index_hnsw.HnswIndex` is the approximate index for
production sizes (see its docstring for why usearch).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from ml.errors import EncoderMismatchError

__all__ = [
    "EncoderMismatchError",
    "ExactIndex",
    "RWLock",
    "VectorIndex",
    "create_index",
    "load_index",
]

META = "meta.json"
FORMAT_VERSION = 1


@runtime_checkable
class VectorIndex(Protocol):
    dim: int
    encoder_id: str | None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str | None = None) -> Self: ...


class RWLock:
    """Many readers or one writer. Writers wait for readers to drain; new readers wait
    while a writer is waiting, so a stream of searches can't starve an add."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_batch(ids: np.ndarray | None, vectors: np.ndarray, dim: int) -> tuple[Any, np.ndarray]:
    """Validated ``(ids int64 [n] | None, unit float32 rows [n, dim], C-contiguous)``.

    Rows are re-normalised, so distances are cosine distances even for sloppy input."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must be [n, {dim}], got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.ascontiguousarray(
        np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    )
    if ids is None:
        return None, vectors
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    if len(ids) and ids.min() < 0:
        raise ValueError("ids must be >= 0 (-1 is the padding id)")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("duplicate ids in one add() call")
    return ids, vectors


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / META).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))


def read_meta(path: Path, *, kind: str, encoder_id: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((Path(path) / META).read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} index, not {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported index format {meta.get('format_version')}")
    if encoder_id is not None and meta.get("encoder_id") != encoder_id:
        raise EncoderMismatchError(
            f"index at {path} holds vectors of encoder {meta.get('encoder_id')!r}, "
            f"not {encoder_id!r}; re-embed and rebuild instead of mixing encoders"
        )
    return meta


class ExactIndex:
    """Brute-force cosine search in numpy, exact. Queries are scored against the stored
    rows ``chunk_size`` at a time, so memory stays bounded for large indexes."""

    kind = "exact"

    def __init__(self, *, dim: int, encoder_id: str | None = None, chunk_size: int = 65_536):
        self.dim = dim
        self.encoder_id = encoder_id
        self.chunk_size = chunk_size
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._size = 0
        self._row: dict[int, int] = {}
        self._lock = RWLock()

    def __len__(self) -> int:
        return self._size

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, int | np.integer) and int(id_) in self._row

    def _reserve(self, n: int) -> None:
        if n <= len(self._vectors):
            return
        capacity = max(n, 2 * len(self._vectors), 1024)
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        ids = np.full(capacity, -1, dtype=np.int64)
        vectors[: self._size] = self._vectors[: self._size]
        ids[: self._size] = self._ids[: self._size]
        self._vectors, self._ids = vectors, ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        with self._lock.write():
            existing = np.array([int(i) in self._row for i in ids], dtype=bool)
            for i, vector in zip(ids[existing], vectors[existing], strict=True):
                self._vectors[self._row[int(i)]] = vector
            new_ids, new_vectors = ids[~existing], vectors[~existing]
            self._reserve(self._size + len(new_ids))
            stop = self._size + len(new_ids)
            self._vectors[self._size : stop] = new_vectors
            self._ids[self._size : stop] = new_ids
            self._row.update(zip(new_ids.tolist(), range(self._size, stop), strict=True))
            self._size = stop

    def remove(self, ids: np.ndarray) -> int:
        removed = 0
        with self._lock.write():
            for id_ in np.asarray(ids, dtype=np.int64).ravel().tolist():
                row = self._row.pop(id_, None)
                if row is None:
                    continue
                last = self._size - 1
                if row != last:  # move the last row into the hole
                    self._vectors[row] = self._vectors[last]
                    self._ids[row] = self._ids[last]
                    self._row[int(self._ids[row])] = row
                self._ids[last] = -1
                self._size = last
                removed += 1
        return removed

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, queries = check_batch(None, vectors, self.dim)
        n = len(queries)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        out_dist = np.full((n, k), np.inf, dtype=np.float32)
        with self._lock.read():
            size = self._size
            if size == 0 or k <= 0:
                return out_ids, out_dist
            best_sim = np.full((n, 0), -np.inf, dtype=np.float32)
            best_row = np.zeros((n, 0), dtype=np.int64)
            for start in range(0, size, self.chunk_size):
                stop = min(size, start + self.chunk_size)
                sims = queries @ self._vectors[start:stop].T
                take = min(k, stop - start)
                part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
                best_sim = np.hstack([best_sim, np.take_along_axis(sims, part, axis=1)])
                best_row = np.hstack([best_row, part + start])
                if best_sim.shape[1] > k:
                    keep = np.argpartition(-best_sim, k - 1, axis=1)[:, :k]
                    best_sim = np.take_along_axis(best_sim, keep, axis=1)
                    best_row = np.take_along_axis(best_row, keep, axis=1)
            order = np.argsort(-best_sim, axis=1, kind="stable")
            best_sim = np.take_along_axis(best_sim, order, axis=1)
            best_row = np.take_along_axis(best_row, order, axis=1)
            found = best_sim.shape[1]
            out_ids[:, :found] = self._ids[best_row]
            out_dist[:, :found] = 1.0 - best_sim
        return out_ids, out_dist

    def save(self, path: str | Path) -> None:
        path = Path(path)
        with self._lock.read():
            write_meta(
                path,
                {
                    "kind": self.kind,
                    "dim": self.dim,
                    "encoder_id": self.encoder_id,
                    "size": self._size,
                },
            )
            np.save(path / "vectors.npy", self._vectors[: self._size])
            np.save(path / "ids.npy", self._ids[: self._size])

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str | None = None) -> Self:
        path = Path(path)
        meta = read_meta(path, kind=cls.kind, encoder_id=encoder_id)
        index = cls(dim=int(meta["dim"]), encoder_id=meta.get("encoder_id"))
        index.add(np.load(path / "ids.npy"), np.load(path / "vectors.npy"))
        return index


def create_index(
    kind: str = "hnsw", *, dim: int, encoder_id: str | None = None, **config: Any
) -> VectorIndex:
    """The one factory for indexes: ``"exact"`` (:class:`ExactIndex`) or ``"hnsw"``
    (:class:`ml.index_hnsw.HnswIndex`)."""
    if kind == "exact":
        return ExactIndex(dim=dim, encoder_id=encoder_id, **config)
    if kind == "hnsw":
        from ml.index_hnsw import HnswIndex

        return HnswIndex(dim=dim, encoder_id=encoder_id, **config)
    raise ValueError(f"unknown index kind {kind!r}; expected 'exact' or 'hnsw'")


def load_index(path: str | Path, *, encoder_id: str | None = None) -> VectorIndex:
    """Load whichever index kind ``path`` holds (read from its ``meta.json``)."""
    kind = json.loads((Path(path) / META).read_text()).get("kind")
    if kind == "exact":
        return ExactIndex.load(path, encoder_id=encoder_id)
    if kind == "hnsw":
        from ml.index_hnsw import HnswIndex

        return HnswIndex.load(path, encoder_id=encoder_id)
    raise ValueError(f"{path}: unknown index kind {kind!r}")
