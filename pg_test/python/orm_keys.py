"""SQLAlchemy and Django against a federated table (docs/keys.md), run by pg_test/tests/orm.rs.

argv: the libpq connection strings of two nodes of one federation, on which the table
`accounts (id bigint identity, email text unique, balance int)` is federated. Every check
raises on failure; the last line printed is a JSON summary the Rust test checks again.
"""
import io
import json
import sys

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.automap import automap_base

east, west = sys.argv[1], sys.argv[2]
summary = {}


def engine(conninfo):
    return sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo))


# SQLAlchemy: reflection sees the parent's primary key; automap maps the parent.
e_east, e_west = engine(east), engine(west)
accounts = sa.Table("accounts", sa.MetaData(), autoload_with=e_east)
summary["sqlalchemy_primary_key"] = [c.name for c in accounts.primary_key.columns]
assert summary["sqlalchemy_primary_key"] == ["id", "node_name"], summary
Base = automap_base()
Base.prepare(autoload_with=e_east)
assert "accounts" in Base.classes, list(Base.classes.keys())
summary["automap_classes"] = sorted(Base.classes.keys())

# on_conflict_do_update with the same statement on both nodes; node_name left to its default.
def upsert(eng, email, amount):
    with eng.begin() as c:
        stmt = insert(accounts).values(email=email, balance=amount)
        stmt = stmt.on_conflict_do_update(
            index_elements=["email", "node_name"],
            set_={"balance": accounts.c.balance + stmt.excluded.balance},
        ).returning(accounts.c.id, accounts.c.balance, accounts.c.node_name)
        return list(c.execute(stmt).one())


first = upsert(e_east, "sa@east", 5)
second = upsert(e_east, "sa@east", 5)
assert first[0] == second[0] and second[1] == 10 and second[2] == "east", (first, second)
west_row = upsert(e_west, "sa@west", 7)
assert west_row[2] == "west" and west_row[0] >> 48 != first[0] >> 48, (west_row, first)
# By the primary key too, with the id RETURNING gave.
with e_west.begin() as c:
    stmt = insert(accounts).values(id=west_row[0], email="sa@west", balance=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id", "node_name"], set_={"balance": accounts.c.balance + 1}
    ).returning(accounts.c.balance)
    assert c.execute(stmt).scalar_one() == 8
summary["sqlalchemy_upserts"] = {"east": second, "west": west_row[0]}

# Django: inspectdb emits a model with the composite key; bulk_create(update_conflicts=True).
import django
from django.conf import settings

params = dict(kv.split("=", 1) for kv in east.split())
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params["dbname"],
            "USER": params["user"],
            "HOST": params["host"],
            "PORT": params["port"],
        }
    },
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()
from django.core.management import call_command
from django.db import connection, models

out = io.StringIO()
call_command("inspectdb", "accounts", stdout=out)
model_src = out.getvalue()
assert "class Accounts(models.Model):" in model_src, model_src
assert "models.CompositePrimaryKey('id', 'node_name')" in model_src, model_src
summary["inspectdb_primary_key"] = "CompositePrimaryKey('id', 'node_name')"


class Account(models.Model):
    """The model docs/keys.md shows: the node column defaults in the database."""

    pk = models.CompositePrimaryKey("id", "node_name")
    id = models.BigIntegerField(db_default=models.Func(
        template="nextval(pg_get_serial_sequence('accounts', 'id'))",
        output_field=models.BigIntegerField()))
    node_name = models.TextField(db_default=models.Func(
        function="federation.node_name", output_field=models.TextField()))
    email = models.TextField()
    balance = models.IntegerField()

    class Meta:
        app_label = "federated"
        db_table = "accounts"
        managed = False


Account.objects.bulk_create(
    [Account(email="dj@east", balance=1), Account(email="dj@east2", balance=2)]
)
rows = Account.objects.bulk_create(
    [Account(email="dj@east", balance=100), Account(email="dj@east2", balance=200)],
    update_conflicts=True,
    unique_fields=["email", "node_name"],
    update_fields=["balance"],
)
got = dict(Account.objects.filter(email__startswith="dj@").values_list("email", "balance"))
assert got == {"dj@east": 100, "dj@east2": 200}, got
nodes = set(Account.objects.filter(email__startswith="dj@").values_list("node_name", flat=True))
assert nodes == {"east"}, nodes
summary["django_bulk_create"] = got
connection.close()
print(json.dumps(summary))
