"""The connection to the lineage database: PostgreSQL in every deployment, SQLite for the
embedded default, each bounded so that a server that stops answering ends a command instead of
hanging it (REPOVAULT_DB_TIMEOUT_S)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import URL, make_url


def lineage_engine(db_url: str, timeout_s: float) -> Engine:
    """An engine on `db_url` (a SQLite file's folder is created) whose connections give up
    after about `timeout_s` (`connect_args`, `_statement_timeout`)."""
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")  # the driver RepoVault installs
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, pool_pre_ping=True, future=True, connect_args=connect_args(url, timeout_s)
    )
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if url.get_backend_name() == "postgresql":
        hook = _statement_timeout(max(1, int(timeout_s)))
        event.listen(engine, "connect", hook)
    return engine


def connect_args(url: URL, timeout_s: float) -> dict[str, Any]:
    """What the driver needs so that a server accepting connections but never answering ends a
    command in about `timeout_s` instead of hanging it (the statement timeout is set per
    connection: `_statement_timeout`).

    PostgreSQL (libpq): `connect_timeout` bounds the whole connection start-up (TCP, TLS,
    authentication); TCP keepalives and `tcp_user_timeout` notice a peer that vanished
    mid-query (no reset ever comes). A value in REPOVAULT_DB_URL's query wins. SQLite: how long
    a writer waits for another one's lock."""
    seconds = max(1, int(timeout_s))
    if url.get_backend_name() == "postgresql":
        wanted = {
            "connect_timeout": seconds,
            "keepalives": 1,
            "keepalives_idle": seconds,
            "keepalives_interval": max(1, seconds // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": seconds * 1000,
        }
        return {k: v for k, v in wanted.items() if k not in url.query}
    if url.get_backend_name() == "sqlite":
        return {"timeout": seconds}
    return {}


def _statement_timeout(seconds: int) -> Callable[[Any, Any], None]:
    """A connect hook: the server cancels any statement (or lock wait) running longer. A
    session SET rather than the `options` start-up parameter, which PgBouncer refuses; in
    autocommit, so the pool's rollback does not undo it."""

    def hook(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {seconds * 1000}")
        dbapi_conn.autocommit = autocommit

    return hook


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
