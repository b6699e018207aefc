"""usernames compare case-insensitively: users.username_key, unique, filled from the names

Revision ID: b383c4b544f4
Revises: 5c1e7a9d2b40
Create Date: 2026-12-07 13:00:00

Refuses, before changing anything, when existing users differ only in case or Unicode
form (`admin1`, `ADMIN1`): which one keeps the name is a person's decision.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mammosearch.db.migrate import MigrationRefused

revision: str = "b383c4b544f4"
down_revision: str | None = "5c1e7a9d2b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(username: str) -> str:
    """mammosearch.access.users.username_key as of this revision (a migration keeps its rule)."""
    display = unicodedata.normalize("NFKC", username).strip()
    return unicodedata.normalize("NFKC", display.casefold())


def upgrade() -> None:
    connection = op.get_bind()
    users = connection.execute(sa.text("SELECT id, username FROM users ORDER BY id")).all()
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for user_id, username in users:
        by_key[_key(username)].append((user_id, username))
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(
            " and ".join(f"{name!r} (id {user_id})" for user_id, name in names) for names in clashes
        )
        raise MigrationRefused(
            f"users that differ only in case or Unicode form cannot coexist: {listed}. "
            "Rename all but one of each, e.g. UPDATE users SET username = 'admin1-old' "
            "WHERE id = N; (audit events keep the old name), then run "
            "`mammosearch db upgrade` again. Nothing was changed."
        )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("username_key", sa.String(length=512), nullable=True))
    for user_id, username in users:
        connection.execute(
            sa.text("UPDATE users SET username_key = :key WHERE id = :id"),
            {"key": _key(username), "id": user_id},
        )
    with op.batch_alter_table("users") as batch:
        batch.alter_column("username_key", existing_type=sa.String(length=512), nullable=False)
        batch.create_index("ix_users_username_key", ["username_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_username_key")
        batch.drop_column("username_key")
