"""rule runs: stored backtests and dry runs (a promotion to live points at its dry run)

Adds ``rule_runs`` only (no existing table is touched). Rule modes gain ``draft``, a value
of the existing ``rules.mode`` column (no schema change). The downgrade keeps the runs in a
stash table that the next upgrade puts back (with the id sequence moved past them on
PostgreSQL), so a round trip loses no run; a downgraded server reads a ``draft`` rule as
one it does not evaluate (routing evaluates ``active`` and ``shadow`` only).

Revision ID: 0015
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

from backend.migrate import keep_table, restore_table
from backend.types import TZDateTime

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the rows are stashed and restored by the upgrade

COLUMNS = ["id", "rule_id", "rule_version", "kind", "items_scanned", "hits", "result",
           "created_by", "created_at"]


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rule_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule_id", sa.Integer(), sa.ForeignKey(
            "rules.id", ondelete="CASCADE", name="fk_rule_runs_rule_id_rules"), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("items_scanned", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("result", _json(), nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey(
            "users.id", ondelete="SET NULL", name="fk_rule_runs_created_by_users")),
        sa.Column("created_at", TZDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rule_runs"),
    )
    op.create_index("ix_rule_runs_rule_id_created_at", "rule_runs", ["rule_id", "created_at"])
    restore_table(revision=revision, table="rule_runs", columns=COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('rule_runs', 'id'), "
                   "COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM rule_runs")


def downgrade() -> None:
    keep_table(revision=revision, table="rule_runs")
    op.drop_index("ix_rule_runs_rule_id_created_at", table_name="rule_runs")
    op.drop_table("rule_runs")
