"""golden items: the golden set's life cycle (active / retired, where each came from)

Adds ``golden_items`` (one row per golden item whose life cycle Quorum recorded: its
state, ``active`` or ``retired`` past the exposure cap, its source — ingested, or
promoted from moderator verdicts with high agreement — and the exposures when retired).
No existing table is touched. The downgrade keeps the rows in a stash table that the next
upgrade puts back, so a round trip loses nothing.

Revision ID: 0022
Revises: 0019
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrate import keep_table, restore_table
from backend.types import TZDateTime

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the rows are stashed and restored by the upgrade

COLUMNS = ["item_id", "state", "source", "label", "exposures", "reason", "retired_at",
           "created_at"]


def upgrade() -> None:
    op.create_table(
        "golden_items",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=True),
        sa.Column("exposures", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("retired_at", TZDateTime(timezone=True), nullable=True),
        sa.Column("created_at", TZDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"],
                                name=op.f("fk_golden_items_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_golden_items")),
    )
    restore_table(revision=revision, table="golden_items", columns=COLUMNS)


def downgrade() -> None:
    keep_table(revision=revision, table="golden_items")
    op.drop_table("golden_items")
