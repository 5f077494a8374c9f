"""Asynchronous jobs: request, progress, lease and result of each.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=True, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("uploads", sa.JSON, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("errors", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("result", sa.String(256), nullable=False),
        sa.Column("created", when, nullable=False),
        sa.Column("started", when, nullable=True),
        sa.Column("finished", when, nullable=True),
        sa.Column("expires", when, nullable=True),
        sa.Column("worker", sa.String(256), nullable=False),
        sa.Column("heartbeat", when, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("jobs")
