"""hash banks: known-bad PDQ hashes with a label, items' image hashes, calibrated distances

Adds ``hash_banks`` (a named list with a label and an action), ``bank_hashes`` (the
PDQ hashes of a bank), ``item_hashes`` (an item's image hash per content hash) and
``hash_distances`` (the calibrated Hamming distance of each bank and of image reuse, with
the evidence behind it). No existing table is touched. The downgrade keeps every row in
stash tables that the next upgrade puts back (id sequences moved past them on
PostgreSQL), so a round trip loses nothing.

Revision ID: 0019
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

from backend.migrate import keep_table, restore_table
from backend.types import TZDateTime

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the rows are stashed and restored by the upgrade

TABLES = {
    "hash_banks": ["id", "name", "label", "action", "queue_kind", "description",
                   "created_at", "updated_at"],
    "bank_hashes": ["id", "bank_id", "hash", "ref", "created_at"],
    "item_hashes": ["item_id", "hash", "quality", "content_hash", "created_at"],
    "hash_distances": ["key", "distance", "backing", "updated_at"],
}


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hash_banks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("queue_kind", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TZDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", TZDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hash_banks")),
        sa.UniqueConstraint("name", name=op.f("uq_hash_banks_name")),
    )
    op.create_table(
        "bank_hashes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bank_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("created_at", TZDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bank_id"], ["hash_banks.id"],
                                name=op.f("fk_bank_hashes_bank_id_hash_banks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_hashes")),
        sa.UniqueConstraint("bank_id", "hash", name=op.f("uq_bank_hashes_bank_id_hash")),
    )
    with op.batch_alter_table("bank_hashes") as batch:
        batch.create_index(batch.f("ix_bank_hashes_bank_id"), ["bank_id"], unique=False)
    op.create_table(
        "item_hashes",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", TZDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"],
                                name=op.f("fk_item_hashes_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_item_hashes")),
    )
    with op.batch_alter_table("item_hashes") as batch:
        batch.create_index("ix_item_hashes_hash", ["hash"], unique=False)
    op.create_table(
        "hash_distances",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("backing", _json(), nullable=True),
        sa.Column("updated_at", TZDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_hash_distances")),
    )
    for table, columns in TABLES.items():
        restore_table(revision=revision, table=table, columns=columns)
    if op.get_bind().dialect.name == "postgresql":
        for table in ("hash_banks", "bank_hashes"):
            op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)")


def downgrade() -> None:
    for table in TABLES:
        keep_table(revision=revision, table=table)
    with op.batch_alter_table("item_hashes") as batch:
        batch.drop_index("ix_item_hashes_hash")
    op.drop_table("item_hashes")
    op.drop_table("hash_distances")
    with op.batch_alter_table("bank_hashes") as batch:
        batch.drop_index(batch.f("ix_bank_hashes_bank_id"))
    op.drop_table("bank_hashes")
    op.drop_table("hash_banks")
