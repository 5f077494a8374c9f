"""Datasets remember why they cannot be opened; files are keyed by (served folder, path).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "datasets", sa.Column("error", sa.Text, nullable=False, server_default=sa.text("''"))
    )
    # `files` only spares a rescan: rebuilding it costs one probe of each file, once.
    op.drop_table("files")
    op.create_table(
        "files",
        sa.Column("root", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("files")
    op.create_table(
        "files",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_files_root", "files", ["root"])
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("error")
