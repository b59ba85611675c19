"""item images: what the embed stage made of each item's image (fetched, local, failed)

Adds ``item_images`` only (no existing table is touched): per item, the image reference
it was embedded with, whether the image was fetched (an http(s) URL), read from the data
directory or not loaded (with the reason), its content type and size, and its PDQ hash.
The downgrade keeps the rows in a stash table that the next upgrade puts back, so a
round trip loses nothing.

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrate import keep_table, restore_table
from backend.types import TZDateTime

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the rows are stashed and restored by the upgrade

COLUMNS = ["item_id", "ref", "state", "reason", "content_type", "size", "pdq_hash",
           "pdq_quality", "fetched_at"]


def upgrade() -> None:
    op.create_table(
        "item_images",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=50), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("pdq_hash", sa.String(length=64), nullable=True),
        sa.Column("pdq_quality", sa.Integer(), nullable=True),
        sa.Column("fetched_at", TZDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"],
                                name=op.f("fk_item_images_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_item_images")),
    )
    op.create_index(op.f("ix_item_images_state"), "item_images", ["state"], unique=False)
    restore_table(revision=revision, table="item_images", columns=COLUMNS)


def downgrade() -> None:
    keep_table(revision=revision, table="item_images")
    op.drop_index(op.f("ix_item_images_state"), table_name="item_images")
    op.drop_table("item_images")
