"""Apps get a sandbox id (their uid's offset) from a counter that never goes back.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("sandbox_id", sa.Integer(), nullable=True))
    # Apps made before: their id is their sandbox id, and the counter starts above them all.
    op.execute("UPDATE apps SET sandbox_id = id")
    op.execute(
        "INSERT INTO counters (name, value) SELECT 'app_sandbox', COALESCE(MAX(id), 0) FROM apps"
    )


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("sandbox_id")
    op.drop_table("counters")
