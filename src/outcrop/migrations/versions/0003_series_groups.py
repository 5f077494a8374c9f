"""Files remember which of their groups are time series.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Emptying `files` makes the next scan probe every file once, which fills the column.
    op.execute("DELETE FROM files")
    op.add_column("files", sa.Column("series", sa.JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("series")
