"""Platform tokens get a scope, the apps it covers, and an expiry.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from kiln.store.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        # Tokens made before scopes existed could do everything: they stay admin tokens.
        batch.add_column(sa.Column("scope", sa.String(20), nullable=False, server_default="admin"))
        batch.add_column(sa.Column("apps", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("expires_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("apps")
        batch.drop_column("scope")
