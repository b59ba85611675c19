"""crowd bookkeeping: a durable key-value store for crowd.push, assignment status, outcomes

``crowd_store`` backs `backend.crowdwork.store.DbStore` (crowd's ``Store`` protocol:
what a push created before and after each Toloka call). ``judgments.assignment_status``
keeps the review verdict of a crowd answer (SUBMITTED / ACCEPTED / REJECTED) and
``crowd_tasks.outcome`` how an item left its pool (decided / moderators / control).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.types

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def downgrade() -> None:
    with op.batch_alter_table("crowd_tasks", schema=None) as batch_op:
        batch_op.drop_column("outcome")
    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.drop_column("assignment_status")
    op.drop_table("crowd_store")
