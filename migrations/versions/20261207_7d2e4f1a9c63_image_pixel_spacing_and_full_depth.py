"""images keep their pixel spacing and, for deep DICOM originals, a full-depth copy

Revision ID: 7d2e4f1a9c63
Revises: b383c4b544f4
Create Date: 2026-12-07 16:00:00

Both nullable: images ingested before this revision have neither, and the viewer then
compares them at the same pixel scale with their stored 8-bit pixels, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2e4f1a9c63"
down_revision: str | None = "b383c4b544f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("pixel_spacing_mm", sa.Float(), nullable=True))
        batch.add_column(sa.Column("full_depth", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("full_depth")
        batch.drop_column("pixel_spacing_mm")
