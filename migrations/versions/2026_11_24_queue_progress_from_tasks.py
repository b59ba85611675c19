"""queues: progress is counted from the tasks; drop the done counter

Every verdict used to bump ``queues.done``, one row that all moderators' transactions on a
queue waited on. Progress is now ``count(tasks where state = 'done')`` per queue, through
the ``(queue_id, state, id)`` index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the counter is recomputed from the tasks


def upgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("done")


def downgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.add_column(sa.Column("done", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE queues SET done = (SELECT count(*) FROM tasks "
               "WHERE tasks.queue_id = queues.id AND tasks.state = 'done')")
