"""Neighbour search in PostgreSQL with pgvector, shared by every API and worker process.

Vectors live in ``item_vectors`` (made by migration 0002 where the extension exists). The
column is dimension-free so several encoders can coexist; each encoder gets a partial
HNSW expression index ``((embedding::vector(DIM)) vector_cosine_ops) WHERE encoder_id = …``
and every query uses the same expression, so the planner picks that index. The
decision-log watermark is a row in ``vector_sync``, written in the same transaction as the
vectors it covers.
"""

from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(v, dtype=np.float32)) + "]"


def available(session: Session) -> bool:
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return _table_exists(str(bind.url), session)


_known: dict[str, bool] = {}


def _table_exists(url: str, session: Session) -> bool:
    if url not in _known:
        _known[url] = session.execute(text(
            "select to_regclass('item_vectors') is not null")).scalar_one()
    return _known[url]


class PgVectorStore:
    """Same interface as ``LocalVectorStore``, bound to one session (one transaction)."""

    def __init__(self, session: Session, *, encoder_id: str, dim: int,
                 ef_search: int = 100) -> None:
        self.session = session
        self.encoder_id = encoder_id
        self.dim = int(dim)
        self.ef_search = ef_search
        self.watermark = 0
        digest = hashlib.sha1(encoder_id.encode()).hexdigest()[:10]
        self.index_name = f"ix_item_vectors_hnsw_{digest}"

    def ensure_index(self) -> None:
        self.session.execute(text(
            f"CREATE INDEX IF NOT EXISTS {self.index_name} ON item_vectors USING hnsw "
            f"((embedding::vector({self.dim})) vector_cosine_ops) "
            f"WHERE encoder_id = '{self.encoder_id.replace(chr(39), chr(39) * 2)}'"))

    def refresh(self) -> None:
        self.watermark = self.session.execute(text(
            "select watermark from vector_sync where encoder_id = :e"),
            {"e": self.encoder_id}).scalar() or 0

    def add(self, ids: np.ndarray, vectors: np.ndarray, watermark: int) -> None:
        self.ensure_index()
        rows = [{"i": int(i), "e": self.encoder_id, "v": _literal(v)}
                for i, v in zip(ids, vectors, strict=True)]
        if rows:
            self.session.execute(text(
                "INSERT INTO item_vectors (item_id, encoder_id, embedding) "
                "VALUES (:i, :e, CAST(:v AS vector)) ON CONFLICT (item_id, encoder_id) "
                "DO UPDATE SET embedding = EXCLUDED.embedding"), rows)
        self.session.execute(text(
            "INSERT INTO vector_sync (encoder_id, watermark) VALUES (:e, :w) "
            "ON CONFLICT (encoder_id) DO UPDATE SET watermark = GREATEST("
            "vector_sync.watermark, EXCLUDED.watermark)"), {"e": self.encoder_id, "w": watermark})
        self.watermark = watermark

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(vectors)
        ids = np.full((n, k), -1, dtype=np.int64)
        dists = np.full((n, k), np.inf, dtype=np.float32)
        self.session.execute(text(f"SET LOCAL hnsw.ef_search = {int(self.ef_search)}"))
        expr = f"embedding::vector({self.dim})"
        stmt = text(
            f"SELECT item_id, {expr} <=> CAST(:q AS vector({self.dim})) AS d FROM item_vectors "
            f"WHERE encoder_id = :e ORDER BY {expr} <=> CAST(:q AS vector({self.dim})) "
            f"LIMIT :k")
        for row, v in enumerate(vectors):
            found = self.session.execute(stmt, {"q": _literal(v), "e": self.encoder_id,
                                                "k": k}).all()
            for j, (item_id, d) in enumerate(found):
                ids[row, j] = item_id
                dists[row, j] = d
        return ids, dists

    def __len__(self) -> int:
        return int(self.session.execute(text(
            "select count(*) from item_vectors where encoder_id = :e"),
            {"e": self.encoder_id}).scalar_one())
