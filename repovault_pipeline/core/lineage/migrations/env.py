"""Alembic's environment: migrations run on the connection `lineage/schema.py` hands over, inside
its transaction and under its lock. Alembic's own command line has no database to reach:
`repovault init` upgrades."""

from alembic import context

from repovault_pipeline.core.lineage.schema import context_options

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "the lineage database is upgraded by `repovault init`, not by alembic's "
        "command line; alembic.ini is there for `alembic revision` and `alembic history`"
    )
context.configure(connection=connection, **context_options(connection))
with context.begin_transaction():
    context.run_migrations()
