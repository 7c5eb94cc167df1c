"""A new table created and federated in one migration on a running federation."""
revision = "0004"
down_revision = "0003"

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.create_table(
        "pens",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("capacity", sa.Integer, sa.CheckConstraint("capacity > 0")),
    )
    op.create_index("pens_name", "pens", ["name"])
    op.execute("SELECT federation.enable('pens')")


def downgrade():
    op.execute("SELECT federation.disable('pens')")
    op.drop_table("pens")
