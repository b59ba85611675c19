"""jobs and deliveries: the job engine's schema, job runs, the decision feed, webhooks

- PostgreSQL only: procrastinate's schema (``procrastinate_jobs``, ``_events``,
  ``_workers``, ``_periodic_defers``, its types and functions), from the installed
  procrastinate's own ``schema.sql``. SQLite runs the same tasks in-process and needs none.
- ``job_runs``: one row per run of a periodic task (last run and outcome: ``quorum jobs``).
- ``decision_feed``: decision events in commit order (the cursor of
  ``GET /api/v1/decisions``); existing events are fed, in id order, by the first
  sequencer run (``deliveries.service.sequence_feed``).
- ``webhook_subscriptions`` and ``webhook_deliveries`` (pending / delivered / dead).
- item states: ``new`` becomes ``received`` (ingested, routing not finished yet).

Downgrade keeps the job runs, the feed, the subscriptions, the deliveries and the jobs
not finished yet (``todo`` / ``doing``) in stash tables, which the upgrade puts back (the
jobs as ``todo``: their workers are gone); renames ``received`` back to ``new``; and drops
procrastinate's schema with the history of finished jobs (which it prunes after
``QUORUM_JOBS_KEEP_FINISHED_HOURS`` anyway).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.types
from backend.migrate import keep_table, restore_table

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # stashed and restored; finished jobs' history aside

JOBS_STASH = "_stash_0008_procrastinate_jobs"
JOB_COLUMNS = "queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at, attempts"

#: Tables this revision makes, parents first, and their columns (stashed on downgrade).
KEPT = {
    "webhook_subscriptions": ["id", "url", "secret", "sources", "labels", "is_active",
                              "created_at"],
    "webhook_deliveries": ["id", "subscription_id", "event_id", "state", "attempts",
                           "next_attempt_at", "last_status", "last_error", "payload",
                           "created_at", "delivered_at"],
    "decision_feed": ["seq", "event_id", "fed_at"],
    "job_runs": ["id", "name", "key", "outcome", "detail", "error", "worker", "started_at",
                 "finished_at"],
}

JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql")
TS = backend.types.TZDateTime(timezone=True)


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _is_pg():
        from procrastinate.schema import SchemaManager

        # psycopg runs a parameterless multi-statement string as is
        op.get_bind().connection.driver_connection.execute(SchemaManager.get_schema())
        if sa.inspect(op.get_bind()).has_table(JOBS_STASH):
            # one waiting job per queueing lock (the engine allows no more)
            op.execute(f"INSERT INTO procrastinate_jobs ({JOB_COLUMNS}, status) "
                       f"SELECT DISTINCT ON (coalesce(queueing_lock, job_id::text)) "
                       f"{JOB_COLUMNS}, 'todo' FROM {JOBS_STASH} "
                       "ORDER BY coalesce(queueing_lock, job_id::text), job_id")
            op.execute(f"DROP TABLE {JOBS_STASH}")

    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.create_index("ix_job_runs_name_started_at", ["name", "started_at"])

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("sources", JSON, nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_table(
        "decision_feed",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("fed_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["decision_events.id"],
                                name=op.f("fk_decision_feed_event_id_decision_events"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_decision_feed")),
        sa.UniqueConstraint("event_id", name=op.f("uq_decision_feed_event_id")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["decision_events.id"],
                                name=op.f("fk_webhook_deliveries_event_id_decision_events"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("subscription_id", "event_id",
                            name=op.f("uq_webhook_deliveries_subscription_id_event_id")),
    )
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.create_index("ix_webhook_deliveries_state_next_attempt_at",
                              ["state", "next_attempt_at"])
    for table, columns in KEPT.items():
        restore_table(revision=revision, table=table, columns=columns)
        if _is_pg():  # restored ids: move the sequence past them
            pk = columns[0]
            op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{pk}'), "
                       f"coalesce(max({pk}), 1), max({pk}) IS NOT NULL) FROM {table}")
    op.execute("UPDATE item_status SET state = 'received' WHERE state = 'new'")


def downgrade() -> None:
    op.execute("UPDATE item_status SET state = 'new' WHERE state = 'received'")
    for table in KEPT:
        keep_table(revision=revision, table=table)
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_state_next_attempt_at")
    op.drop_table("webhook_deliveries")
    op.drop_table("decision_feed")
    op.drop_table("webhook_subscriptions")
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.drop_index("ix_job_runs_name_started_at")
    op.drop_table("job_runs")
    if _is_pg():
        op.execute(f"DROP TABLE IF EXISTS {JOBS_STASH}")
        op.execute(f"CREATE TABLE {JOBS_STASH} AS SELECT id AS job_id, {JOB_COLUMNS} "
                   "FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
        # every object procrastinate's schema.sql made: tables, then functions, then types
        op.execute("DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, "
                   "procrastinate_jobs, procrastinate_workers, procrastinate_version CASCADE")
        bind = op.get_bind()
        for (sig,) in bind.execute(sa.text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%'")):
            op.execute(f"DROP FUNCTION IF EXISTS {sig} CASCADE")
        for (name,) in bind.execute(sa.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%' "
                "AND t.typtype IN ('e', 'c')")):
            op.execute(f'DROP TYPE IF EXISTS "{name}" CASCADE')
