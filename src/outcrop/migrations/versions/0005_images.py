"""Sky image collections: ingested files, images with footprints, the HEALPix position
index and the keyword index.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "image_files",
        sa.Column("collection", sa.String(128), primary_key=True),
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("ingested", when, nullable=False),
    )
    _images(when)
    op.create_table(
        "image_cells",
        sa.Column("level", sa.SmallInteger, primary_key=True),
        sa.Column("cell", sa.BigInteger, primary_key=True),
        sa.Column(
            "image",
            sa.Integer,
            sa.ForeignKey("images.pk", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
    )
    op.create_table(
        "image_keywords",
        sa.Column(
            "image",
            sa.Integer,
            sa.ForeignKey("images.pk", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
        sa.Column("name", sa.String(72), primary_key=True),
        sa.Column("text", sa.String(256), nullable=False),
        sa.Column("number", sa.Float, nullable=True),
    )
    op.create_index("ix_image_keywords_number", "image_keywords", ["name", "number"])
    op.create_index("ix_image_keywords_text", "image_keywords", ["name", "text"])


def _images(when: sa.DateTime) -> None:
    op.create_table(
        "images",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(1024), nullable=False, unique=True),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("source", sa.Text, nullable=False, index=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("hdu", sa.Integer, nullable=False),
        sa.Column("extname", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("ra", sa.Float, nullable=False),
        sa.Column("dec", sa.Float, nullable=False),
        sa.Column("radius", sa.Float, nullable=False),
        sa.Column("corners", sa.JSON, nullable=False),
        sa.Column("outline", sa.JSON, nullable=False),
        sa.Column("pixel_scale", sa.Float, nullable=False),
        sa.Column("start", when, nullable=True),
        sa.Column("stop", when, nullable=True),
        sa.Column("exposure", sa.Float, nullable=True),
        sa.Column("instrument", sa.String(256), nullable=False, index=True),
        sa.Column("filter", sa.String(256), nullable=False, index=True),
        sa.Column("telescope", sa.String(256), nullable=False),
        sa.Column("header", sa.JSON, nullable=False),
    )
    op.create_index("ix_images_collection_start", "images", ["collection", "start", "id"])


def downgrade() -> None:
    op.drop_table("image_keywords")
    op.drop_table("image_cells")
    op.drop_table("images")
    op.drop_table("image_files")
