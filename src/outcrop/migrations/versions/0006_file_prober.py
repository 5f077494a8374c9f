"""Files remember which Outcrop version probed them, so an upgrade probes them again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision have no prober, so the next scan probes them again.
    op.add_column("files", sa.Column("prober", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("prober")
