"""API keys' use is kept in the store (logs rotate).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from kiln.store.tables import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("requests", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_used_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("usage_through", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("usage_through")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("requests")
