"""pgvector: item vectors shared by every process (PostgreSQL with the extension only)

On PostgreSQL where the ``vector`` extension is available, create it and the
``item_vectors`` table (one row per item and encoder, dimension-free ``vector`` column;
an HNSW expression index per encoder is created by the application, see
``backend.ml_adapter.pgvector``) plus ``vector_sync`` (the decision-log watermark per
encoder). Elsewhere (SQLite, PostgreSQL without pgvector) this migration does nothing and
the in-process index is used.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: The vectors are a copy of ``item_embeddings``; the upgrade starts an empty index that
#: the next ``quorum embed`` / routing refills from the decision log (watermark 0).
downgrade_drops: str | None = None


def _has_pgvector() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return bind.execute(sa.text(
        "select 1 from pg_available_extensions where name = 'vector'")).first() is not None


def upgrade() -> None:
    if not _has_pgvector():
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("""
        CREATE TABLE item_vectors (
            item_id integer NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            encoder_id varchar(200) NOT NULL,
            embedding vector NOT NULL,
            CONSTRAINT pk_item_vectors PRIMARY KEY (item_id, encoder_id)
        )""")
    op.execute("""
        CREATE TABLE vector_sync (
            encoder_id varchar(200) PRIMARY KEY,
            watermark integer NOT NULL DEFAULT 0
        )""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE IF EXISTS vector_sync")
    op.execute("DROP TABLE IF EXISTS item_vectors")
