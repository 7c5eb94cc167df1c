"""Alembic environment: one node's database, every migration in one transaction (Alembic's
default for PostgreSQL), and an include_object filter so that autogenerate never proposes to
drop pg_federation's partitions or the node column (docs/migrations.md)."""

from alembic import context
from sqlalchemy import MetaData, create_engine

target_metadata = MetaData()


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table" and reflected and compare_to is None:
        return False  # partitions pg_federation made (hippos_east, hippos_default, ...)
    if type_ == "column" and name == "node_name":
        return False
    return True


url = context.get_x_argument(as_dictionary=True)["url"]
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
