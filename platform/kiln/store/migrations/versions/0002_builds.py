"""Builds, and the artifact and manifest each release runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from kiln.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source_digest", sa.String(64), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("runtime", sa.String(40), nullable=True),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("manifest", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_builds_app_id", "builds", ["app_id"])
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("build_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("artifact", sa.Text(), nullable=True))
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))
        batch.create_foreign_key(
            "fk_releases_build_id", "builds", ["build_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_constraint("fk_releases_build_id", type_="foreignkey")
        batch.drop_column("manifest")
        batch.drop_column("artifact")
        batch.drop_column("build_id")
    op.drop_index("ix_builds_app_id", "builds")
    op.drop_table("builds")
