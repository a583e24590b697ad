"""Formations per app, and why a release failed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("formation", sa.Text(), nullable=True))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("status_message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("status_message")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("formation")
