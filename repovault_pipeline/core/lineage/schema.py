"""The lineage database's schema, versioned with Alembic (migrations/, docs/contract.md "Tables").

`upgrade` brings a database to the code's newest revision (`head()`): under a lock (a PostgreSQL
advisory lock, SQLite's write lock), inside one transaction, so two processes opening a new
database at once never both create the tables. Tables created by a RepoVault older than
Alembic (`create_all`, no version table) are recognised by their columns, stamped with the
revision they match, then upgraded: nothing is lost. A database at a revision this code does not
know (a newer RepoVault migrated it) is refused and left as it is.

`ensure` is what every `open_lineage` does: one query when the database is at head, else
`upgrade`. Decision: opening upgrades rather than only checking, because the embedded default
and the tests start from an empty file or database, and a process cannot work on an older
schema anyway; `repovault init` does the same upgrade and says what it did.

The revision lives in `repovault_alembic_version`, not Alembic's default `alembic_version`:
Dagster's own PostgreSQL storage keeps its revision in that one, and a deployment may give both
one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from threading import Lock
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from repovault_pipeline.core.common.errors import SchemaMismatch
from repovault_pipeline.core.lineage.tables import metadata

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "repovault_alembic_version"
# Alembic's `context` and `op` are module-level proxies: one migration at a time per process.
_ALEMBIC = Lock()
# pg_advisory_xact_lock key every RepoVault upgrade takes: "RVSCHEMA" in ASCII.
_PG_LOCK = 0x5256534348454D41


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did. `before` is None for a database without RepoVault tables;
    `recognised`: tables an older RepoVault made without a version, stamped as `before`."""

    before: str | None
    after: str
    recognised: bool = False

    def line(self) -> str:
        done = (
            f"already at {self.after}, the newest schema"
            if self.before == self.after
            else f"upgraded from {self.before or 'no tables'} to {self.after}"
        )
        if self.recognised:
            return f"tables without a schema version recognised as {self.before}, stamped; {done}"
        return done


def context_options(connection: Connection) -> dict[str, Any]:
    """How Alembic runs on `connection` (env.py, and the test comparing head with tables.py):
    RepoVault's version table; on SQLite, whose ALTER TABLE does little, what Alembic renders
    comes out as batch operations (hand-written revisions use `op.batch_alter_table`)."""
    return {"version_table": VERSION_TABLE, "render_as_batch": connection.dialect.name == "sqlite"}


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    """The code's newest revision."""
    newest = _scripts().get_current_head()
    assert newest is not None, f"no revisions in {MIGRATIONS / 'versions'}"
    return newest


def ensure(engine: Engine) -> None:
    """At head after one query; otherwise upgraded, or refused with `SchemaMismatch`."""
    with engine.connect() as conn:
        try:
            current = set(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
        except (OperationalError, ProgrammingError):  # no version table: new or pre-Alembic
            current = set()
    if current != {head()}:
        upgrade(engine)


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to head under the lock, in one transaction; `SchemaMismatch` (and
    nothing changed) for a revision the code does not know or tables it cannot recognise."""
    with _ALEMBIC, _locked(engine) as conn:
        config = _config(conn)
        current = MigrationContext.configure(conn, opts=context_options(conn)).get_current_heads()
        known = {script.revision for script in _scripts().walk_revisions()}
        if unknown := [rev for rev in current if rev not in known]:
            raise SchemaMismatch(
                f"the lineage database at {_masked(engine)} is at schema revision "
                f"{', '.join(unknown)}, which this RepoVault does not know (its newest is "
                f"{head()}): a newer RepoVault migrated it; upgrade RepoVault to that release "
                "or newer (nothing was changed)"
            )
        recognised = None
        if not current and (found := _signature(conn)):
            recognised = _recognise(found, engine)
            command.stamp(config, recognised)
        command.upgrade(config, "head")
    before = recognised or (current[0] if current else None)
    return Upgrade(before=before, after=head(), recognised=recognised is not None)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction holding the upgrade lock; committed when the block ends.
    PostgreSQL: an advisory lock, released with the transaction. SQLite: BEGIN IMMEDIATE takes
    the file's write lock at once (the driver would start no transaction before DDL).
    PostgreSQL's statement_timeout (REPOVAULT_DB_TIMEOUT_S) is lifted for the transaction: a
    migration of a large table, or the wait for another process's migration, may take longer."""
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config


def _signature(conn: Connection) -> dict[str, frozenset[str]]:
    """RepoVault's tables in the database with their column names (other tables are not ours)."""
    inspector = inspect(conn)
    return {
        table: frozenset(column["name"] for column in inspector.get_columns(table))
        for table in sorted(set(inspector.get_table_names()) & set(metadata.tables))
    }


def _recognise(found: dict[str, frozenset[str]], engine: Engine) -> str:
    """The revision whose tables `found` are: each revision is applied in turn to an empty
    in-memory SQLite database and its tables compared."""
    scratch = create_engine("sqlite://")
    try:
        with scratch.connect() as conn:
            config = _config(conn)
            for script in reversed(list(_scripts().walk_revisions())):
                command.upgrade(config, script.revision)
                if _signature(conn) == found:
                    return script.revision
    finally:
        scratch.dispose()
    tables = "; ".join(f"{t}: {', '.join(sorted(c))}" for t, c in found.items())
    raise SchemaMismatch(
        f"the lineage database at {_masked(engine)} has tables no RepoVault release created "
        f'({tables}); compare them with docs/contract.md, "Tables", and move them away or '
        "point REPOVAULT_DB_URL at another database (nothing was changed)"
    )


def _masked(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
