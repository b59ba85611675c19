"""crowd bookkeeping: a durable key-value store for crowd.push, assignment status, outcomes

``crowd_store`` backs `backend.crowdwork.store.DbStore` (crowd's ``Store`` protocol:
what a push created before and after each Toloka call). ``judgments.assignment_status``
keeps the review verdict of a crowd answer (SUBMITTED / ACCEPTED / REJECTED) and
``crowd_tasks.outcome`` how an item left its pool (decided / moderators / control).

The downgrade keeps what the older schema has no place for (the two columns and the
store's rows) in stash tables; upgrading again puts it back (`backend.migrate`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.types
from backend.migrate import keep_columns, keep_table, restore_columns, restore_table

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # kept in stash tables, restored by the upgrade

STORE_COLUMNS = ("key", "value", "updated_at")
JUDGMENT_KEYS = ("id", "item_id")
CROWD_TASK_KEYS = ("id", "pool_id", "item_id")

JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "crowd_store",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("updated_at", backend.types.TZDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_crowd_store")),
    )
    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assignment_status", sa.String(length=20), nullable=True))
    with op.batch_alter_table("crowd_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=20), nullable=True))
    restore_table(revision=revision, table="crowd_store", columns=STORE_COLUMNS)
    restore_columns(revision=revision, table="judgments", columns=["assignment_status"],
                    keys=JUDGMENT_KEYS)
    restore_columns(revision=revision, table="crowd_tasks", columns=["outcome"],
                    keys=CROWD_TASK_KEYS)


def downgrade() -> None:
    keep_columns(revision=revision, table="crowd_tasks", columns=["outcome"],
                 keys=CROWD_TASK_KEYS)
    keep_columns(revision=revision, table="judgments", columns=["assignment_status"],
                 keys=JUDGMENT_KEYS)
    keep_table(revision=revision, table="crowd_store")
    with op.batch_alter_table("crowd_tasks", schema=None) as batch_op:
        batch_op.drop_column("outcome")
    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.drop_column("assignment_status")
    op.drop_table("crowd_store")
