"""A column whose default each node would compute differently: DEFAULT now()."""
revision = "0003"
down_revision = "0002"

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.add_column(
        "herd",
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade():
    op.drop_column("herd", "tagged_at")
