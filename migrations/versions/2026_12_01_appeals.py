"""appeals: a table of appeals against decisions (APPEALS queue, upheld / reversed)

Adds ``appeals`` only (no existing table is touched, so nothing is rebuilt or copied).
The downgrade keeps its rows in a stash table that the next upgrade puts back (with the
id sequence moved past them on PostgreSQL), so a round trip loses no appeal.

Revision ID: 0011
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrate import keep_table, restore_table
from backend.types import TZDateTime

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the rows are stashed and restored by the upgrade

COLUMNS = ["id", "item_id", "event_id", "state", "reason", "appellant", "external_ref",
           "task_id", "outcome_event_id", "decided_by_id", "outcome_reasons", "created_at",
           "decided_at"]


def upgrade() -> None:
    op.create_table(
        "appeals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey(
            "items.id", ondelete="RESTRICT", name="fk_appeals_item_id_items"), nullable=False),
        sa.Column("event_id", sa.Integer(), sa.ForeignKey(
            "decision_events.id", ondelete="RESTRICT",
            name="fk_appeals_event_id_decision_events"), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("appellant", sa.String(200)),
        sa.Column("external_ref", sa.String(200)),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey(
            "tasks.id", ondelete="SET NULL", name="fk_appeals_task_id_tasks")),
        sa.Column("outcome_event_id", sa.Integer(), sa.ForeignKey(
            "decision_events.id", ondelete="SET NULL",
            name="fk_appeals_outcome_event_id_decision_events")),
        sa.Column("decided_by_id", sa.Integer(), sa.ForeignKey(
            "users.id", ondelete="SET NULL", name="fk_appeals_decided_by_id_users")),
        sa.Column("outcome_reasons", sa.Text()),
        sa.Column("created_at", TZDateTime(), nullable=False),
        sa.Column("decided_at", TZDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_appeals"),
        sa.UniqueConstraint("item_id", "external_ref", name="uq_appeals_item_id_external_ref"),
    )
    op.create_index("uq_appeals_item_id_open", "appeals", ["item_id"], unique=True,
                    postgresql_where=sa.text("state = 'open'"),
                    sqlite_where=sa.text("state = 'open'"))
    op.create_index("ix_appeals_state_created_at", "appeals", ["state", "created_at"])
    restore_table(revision=revision, table="appeals", columns=COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('appeals', 'id'), "
                   "COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM appeals")


def downgrade() -> None:
    keep_table(revision=revision, table="appeals")
    op.drop_index("ix_appeals_state_created_at", table_name="appeals")
    op.drop_index("uq_appeals_item_id_open", table_name="appeals")
    op.drop_table("appeals")
