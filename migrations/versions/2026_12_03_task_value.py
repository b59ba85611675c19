"""task confidence: moderators take the task whose decision is likeliest to flip first

Adds ``tasks.confidence`` (the classifier's top probability for the item when the task
was queued; 0.5 for an item it never scored, and for the tasks that exist before this
revision, so their order stays oldest first) and the index the lease walks
(``queue_id, state, confidence, id``: least sure first, then oldest; a plain ascending
index both backends and autogenerate agree on). The downgrade stashes the values
(``keep_columns``) and the next upgrade puts them back, so a round trip loses nothing.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrate import keep_columns, restore_columns

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the values are stashed and restored by the upgrade

KEYS = ("id", "queue_id", "item_id")


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=False,
                                      server_default=sa.text("0.5")))
    op.create_index("ix_tasks_queue_id_state_confidence_id", "tasks",
                    ["queue_id", "state", "confidence", "id"], unique=False)
    restore_columns(revision=revision, table="tasks", columns=["confidence"], keys=KEYS)


def downgrade() -> None:
    keep_columns(revision=revision, table="tasks", columns=["confidence"], keys=KEYS)
    op.drop_index("ix_tasks_queue_id_state_confidence_id", table_name="tasks")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("confidence")
