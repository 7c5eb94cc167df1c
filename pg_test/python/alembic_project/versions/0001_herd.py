"""The herd: created and federated (on a node not yet in a federation, or on a running one)."""
revision = "0001"
down_revision = None

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.create_table(
        "herd",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.execute("SELECT federation.enable('herd')")


def downgrade():
    op.execute("SELECT federation.disable('herd')")
    op.drop_table("herd")
