"""users can be cut off: session versions, forced password change, sign-in backoff, token expiry

Revision ID: 5c1e7a9d2b40
Revises: 90b353370b97
Create Date: 2026-12-03 06:12:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e7a9d2b40"
down_revision: str | None = "90b353370b97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("session_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch.add_column(
            sa.Column("failed_sign_ins", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("sign_in_blocked_until", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("name", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
        batch.drop_column("name")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sign_in_blocked_until")
        batch.drop_column("failed_sign_ins")
        batch.drop_column("must_change_password")
        batch.drop_column("session_version")
