"""thresholds bound to their model and backing; shadow outcomes; decision provenance

Threshold sets record the model and encoder they were calibrated for and the evidence
behind each deciding cut-off (``backing``): an unbacked cut-off runs in shadow. Shadow
outcomes record what an unbacked stage would have decided. Decision events record the
item's content hash, the policy version and the inputs that decided them (replay).

Existing threshold sets get no backing, so after this upgrade they run in shadow until
a calibration run backs them (safe by default). The downgrade keeps the shadow outcomes and
the new columns' values (the sets' model, encoder and backing, the events' content hash,
policy version and inputs) in stash tables that the next upgrade puts back, so a round
trip loses nothing; every other row stays.

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import backend.types
from backend.migrate import keep_columns, keep_table, restore_columns, restore_table

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
downgrade_drops: str | None = None  # rows and column values are stashed and restored


COLUMNS = ["id", "item_id", "source", "label", "band", "probability", "distance",
           "similar_item_id", "model_id", "encoder_id", "threshold_set_version", "reason",
           "routed_to", "details", "created_at"]


SET_COLUMNS = ["model_id", "encoder_id", "backing"]
EVENT_COLUMNS = ["content_hash", "policy_version", "inputs"]


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("threshold_sets") as batch:
        batch.add_column(sa.Column("model_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("encoder_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("backing", _json(), nullable=True))
    with op.batch_alter_table("decision_events") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("policy_version", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("inputs", _json(), nullable=True))
    op.create_table(
        "shadow_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=False),
        sa.Column("band", sa.String(length=50), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("distance", sa.Float(), nullable=True),
        sa.Column("similar_item_id", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.String(length=200), nullable=True),
        sa.Column("encoder_id", sa.String(length=200), nullable=True),
        sa.Column("threshold_set_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("routed_to", sa.String(length=64), nullable=True),
        sa.Column("details", _json(), nullable=True),
        sa.Column("created_at", backend.types.TZDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"],
                                name=op.f("fk_shadow_outcomes_item_id_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["similar_item_id"], ["items.id"],
                                name=op.f("fk_shadow_outcomes_similar_item_id_items"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_outcomes")),
    )
    with op.batch_alter_table("shadow_outcomes") as batch:
        batch.create_index("ix_shadow_outcomes_item_id", ["item_id"], unique=False)
        batch.create_index("ix_shadow_outcomes_created_at", ["created_at"], unique=False)
    restore_table(revision=revision, table="shadow_outcomes", columns=COLUMNS)
    restore_columns(revision=revision, table="threshold_sets", columns=SET_COLUMNS,
                    keys=("id", "version"))
    restore_columns(revision=revision, table="decision_events", columns=EVENT_COLUMNS,
                    keys=("id", "item_id"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('shadow_outcomes', 'id'), "
                   "COALESCE((SELECT max(id) FROM shadow_outcomes), 0) + 1, false)")


def downgrade() -> None:
    keep_table(revision=revision, table="shadow_outcomes")
    keep_columns(revision=revision, table="threshold_sets", columns=SET_COLUMNS,
                 keys=("id", "version"))
    keep_columns(revision=revision, table="decision_events", columns=EVENT_COLUMNS,
                 keys=("id", "item_id"))
    with op.batch_alter_table("shadow_outcomes") as batch:
        batch.drop_index("ix_shadow_outcomes_created_at")
        batch.drop_index("ix_shadow_outcomes_item_id")
    op.drop_table("shadow_outcomes")
    with op.batch_alter_table("decision_events") as batch:
        batch.drop_column("inputs")
        batch.drop_column("policy_version")
        batch.drop_column("content_hash")
    with op.batch_alter_table("threshold_sets") as batch:
        batch.drop_column("backing")
        batch.drop_column("encoder_id")
        batch.drop_column("model_id")
