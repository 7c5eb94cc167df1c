"""A plain new column, run on one node of a running federation."""
revision = "0002"
down_revision = "0001"

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.add_column("herd", sa.Column("weight_kg", sa.Numeric))
    op.create_index("herd_weight", "herd", ["weight_kg"])


def downgrade():
    op.drop_index("herd_weight", table_name="herd")
    op.drop_column("herd", "weight_kg")
