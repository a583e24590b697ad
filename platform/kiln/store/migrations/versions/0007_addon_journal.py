"""Add-ons record whether they are attached or still being provisioned (a deploy's journal).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("addons") as batch:
        batch.add_column(
            sa.Column("status", sa.String(20), nullable=False, server_default="attached")
        )
        batch.add_column(sa.Column("build_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("addons") as batch:
        batch.drop_column("build_id")
        batch.drop_column("status")
