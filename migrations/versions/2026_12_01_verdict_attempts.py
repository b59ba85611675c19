"""verdicts: one human answer per task attempt (judgments and decision events)

``judgments.task_attempt`` and ``decision_events.task_attempt`` record which attempt of
the task (its ``lease_count`` when the verdict finished it) a moderator's verdict
answered; a partial unique index on ``(task_id, task_attempt) WHERE task_attempt IS NOT
NULL`` on each table allows at most one judgment and one decision event per attempt.
Crowd answers, automatic decisions and rows from before this revision keep
``task_attempt`` NULL and are not constrained (several crowd workers answer one task).

Both steps are plain ``ALTER TABLE ... ADD/DROP COLUMN`` and ``CREATE/DROP INDEX`` (no
batch rebuild on SQLite, so no table is copied or dropped and nothing can cascade).
The downgrade drops the two columns after stashing their values (`keep_columns`); the
next upgrade puts them back (`restore_columns`), so a round trip loses nothing.

Revision ID: 0005
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrate import keep_columns, restore_columns

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # the attempts are stashed and restored by the upgrade

TABLES = ("judgments", "decision_events")
WHERE = sa.text("task_attempt IS NOT NULL")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("task_attempt", sa.Integer(), nullable=True))
        restore_columns(revision=revision, table=table, columns=["task_attempt"], keys=["id"])
        op.create_index(f"uq_{table}_task_id_task_attempt", table, ["task_id", "task_attempt"],
                        unique=True, postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade() -> None:
    for table in TABLES:
        keep_columns(revision=revision, table=table, columns=["task_attempt"], keys=["id"])
        op.drop_index(f"uq_{table}_task_id_task_attempt", table_name=table)
        op.drop_column(table, "task_attempt")
