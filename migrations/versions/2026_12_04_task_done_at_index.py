"""tasks (state, done_at): today's moderator work counted without scanning every done task

The moderators' daily capacity (`backend.queues.overflow`) counts the tasks done — and
moved to the crowd — since the day began on every rebalance (after each routing
transaction that queued an overflowable kind). Without an index that is a scan of every
task ever finished; with ``(state, done_at)`` it reads today's rows only. An index only:
the downgrade drops it and nothing is lost.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # an index: nothing to lose


def upgrade() -> None:
    op.create_index("ix_tasks_state_done_at", "tasks", ["state", "done_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_state_done_at", table_name="tasks")
