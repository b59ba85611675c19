"""web sessions (server-side, revocable) and rate-limit counters

A web login used to be a signed cookie that nothing could end before its 12 hours were
up. ``web_sessions`` holds one row per login (the cookie's random id as SHA-256, the
session's CSRF token, expiry, and when and why it ended); logout, a password change and
deactivation end the rows. ``rate_limit_counters`` holds the login rate limits' fixed
windows when they are kept in the database (shared by every worker and replica).

Both tables are new; the downgrade drops them (every web session ends: users log in
again; the counters are transient).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.types import TZDateTime

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Only login state goes: every web session ends (people log in again) and the rate-limit
#: windows restart; nothing of the moderation record is in these tables.
downgrade_drops: str | None = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZDateTime(), nullable=False),
        sa.Column("expires_at", TZDateTime(), nullable=False),
        sa.Column("ended_at", TZDateTime(), nullable=True),
        sa.Column("ended_reason", sa.String(length=20), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index("ix_web_sessions_user_id_ended_at", "web_sessions", ["user_id", "ended_at"])
    op.create_table(
        "rate_limit_counters",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_counters")),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_counters")
    op.drop_index("ix_web_sessions_user_id_ended_at", table_name="web_sessions")
    op.drop_table("web_sessions")
