"""Migrations (lineage/schema.py) on real PostgreSQL and a real SQLite file: databases made by
released RepoVaults are upgraded by `repovault init` (the console script, in a folder of its own)
with every row kept; a second init changes nothing; a database a newer RepoVault migrated is
refused, untouched; the head revision's tables are exactly tables.py's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    MetaData,
    Text,
    create_engine,
    create_mock_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url

from repovault_pipeline.core.common import redact
from repovault_pipeline.core.common.errors import SchemaMismatch
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.lineage.schema import VERSION_TABLE, context_options, head
from repovault_pipeline.core.lineage.tables import metadata, repo_requests, repo_sources, repo_state
from tests.conftest import fresh_database, missing_service
from tests.support.servers import serving

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "schema"
# The releases whose tables the fixtures hold, and the file that defined them there.
FIRST_RELEASE = "616de4a"
RELEASES = {
    FIRST_RELEASE: "repovault_pipeline/core/lineage.py",
    "699cc7d": "repovault_pipeline/core/tables.py",
}
REPOVAULT = str(Path(sys.executable).with_name("repovault"))
PASSWORD = "Sch3maPassw0rd"  # PostgreSQL trusts the test user; the URL carries it anyway
DIALECTS = ("postgresql", "sqlite")
T0 = datetime(2026, 11, 27, 9, 30, 15, 123000, tzinfo=UTC)
# The statuses the released RepoVaults wrote (`partial` came with revision 0004).
RELEASED_STATUSES = ("pending", "in_progress", "completed", "unchanged", "failed", "rejected")


# --- the fixtures are what the released code's create_all emits --------------------------------


# What the releases' code imports from its siblings, and where that lives now.
MOVED = {"redact": redact}


def release_ddl(commit: str, dialect: str) -> list[str]:
    """The statements `metadata.create_all` of `commit` emits on `dialect`, from git history."""
    path = RELEASES[commit]
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    name = f"repovault_pipeline.core._at_{commit}"  # its relative imports resolve in core/
    module = ModuleType(name)
    module.__package__ = "repovault_pipeline.core"
    # core/ was one flat folder then: its siblings are found where they live now
    moved = {f"repovault_pipeline.core.{old}": new for old, new in MOVED.items()}
    sys.modules.update({name: module, **moved})
    try:
        exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    finally:
        for key in (name, *moved):
            del sys.modules[key]
    emitted: list[str] = []
    mock = create_mock_engine(
        f"{dialect}://",
        lambda sql, *_args, **_kw: emitted.append(str(sql.compile(dialect=mock.dialect))),
    )
    module.metadata.create_all(mock, checkfirst=False)
    return [_normal(statement) for statement in emitted]


def statements(ddl: str) -> list[str]:
    """The statements of a DDL file in order, its `--` comments dropped."""
    body = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    return [_normal(statement) for statement in body.split(";") if statement.strip()]


def _normal(statement: str) -> str:
    return "\n".join(line.rstrip() for line in statement.strip().splitlines())


def fixture(commit: str, dialect: str) -> Path:
    return FIXTURES / f"{commit}-{dialect}.sql"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("commit", RELEASES)
def test_the_fixtures_are_the_ddl_of_their_releases(commit: str, dialect: str) -> None:
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO)
    if known.returncode != 0:
        missing_service(f"{commit} is not in this clone's history (a shallow clone?)")
    # create_all orders a table's indexes as a set does: compare the statements, not their order
    assert sorted(statements(fixture(commit, dialect).read_text())) == sorted(
        release_ddl(commit, dialect)
    )


# --- databases of released RepoVaults, upgraded by `repovault init` ------------------------------


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty lineage database: a new PostgreSQL database (its URL carrying a password, which
    must never be printed) or a new SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lineage.db'}"
        return
    with fresh_database() as url:
        yield make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def repovault(
    db_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`repovault ARGS...` as an operator runs it: the console script, in a folder of its own,
    with this test's database and topics."""
    unique = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPOVAULT_")}
    env.update(
        REPOVAULT_DB_URL=db_url,
        REPOVAULT_KAFKA_BOOTSTRAP=kafka_bootstrap,
        REPOVAULT_TOPIC_PENDING=f"pendientes-{unique}",
        REPOVAULT_TOPIC_IN_PROGRESS=f"en_proceso-{unique}",
        REPOVAULT_TOPIC_COMPLETED=f"completados-{unique}",
        REPOVAULT_TOPIC_REJECTED=f"rechazados-{unique}",
    )
    cwd = tmp_path / "operator"
    cwd.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [REPOVAULT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
        assert PASSWORD not in done.stdout + done.stderr
        return done

    return run


def released(db_url: str, commit: str) -> Engine:
    """The database as the release `commit` left it: its tables from the fixture."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for statement in statements(fixture(commit, engine.dialect.name).read_text()):
            conn.exec_driver_sql(statement)
    return engine


def request_rows(sources: Sequence[str]) -> list[dict[str, Any]]:
    """One request in each status, a different source and time each, the way runs leave them."""
    rows = []
    for n, status in enumerate(RELEASED_STATUSES):
        created = T0 + timedelta(minutes=n)
        ran = status not in ("pending", "rejected")
        rows.append(
            {
                "request_id": str(uuid.uuid4()),
                "repo_url": f"https://github.com/acme/tool{n}",
                "repo_id": None if status == "rejected" else f"github.com/acme/tool{n}",
                "source": sources[n % len(sources)],
                "status": status,
                "creation_timestamp": created,
                "inyector_timestamp": None
                if status == "pending"
                else created + timedelta(seconds=2),
                "worker_start_timestamp": created + timedelta(seconds=5) if ran else None,
                "worker_finishing_timestamp": (
                    created + timedelta(seconds=65) if ran and status != "in_progress" else None
                ),
                "run_id": uuid.uuid4().hex if ran else None,
                "snapshot_id": f"20261127T0930{n:02d}Z-abc{n}" if status == "completed" else None,
                "head_commit": f"{n:040x}" if status in ("completed", "unchanged") else None,
                "bytes_uploaded": 1234 * n if status == "completed" else None,
                "error": {
                    "failed": "clone timed out",
                    "rejected": "scheme 'ftp' is not allowed",
                }.get(status),
            }
        )
    return rows


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of RepoVault's tables, as stored (reflected, so any release's columns)."""
    found = MetaData()
    found.reflect(engine, only=lambda name, _: name in metadata.tables)
    with engine.connect() as conn:
        return {
            name: sorted(
                (dict(row._mapping) for row in conn.execute(select(table))),
                key=lambda row: str(next(iter(row.values()))),
            )
            for name, table in found.tables.items()
        }


def assert_kept(before: dict[str, list[dict[str, Any]]], engine: Engine) -> None:
    """Every table and row of `before` is still there with the same values; columns added
    since are empty."""
    after = dump(engine)
    assert set(after) == set(metadata.tables)
    for name, rows in before.items():
        assert rows, f"the test wrote no {name} rows"
        columns = set(rows[0])
        assert [{k: v for k, v in row.items() if k in columns} for row in after[name]] == rows
        assert all(v is None for row in after[name] for k, v in row.items() if k not in columns)


def version(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def schema(engine: Engine) -> dict[str, Any]:
    """Tables, columns, indexes and the stored revision: what an upgrade would change."""
    inspector = inspect(engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
        )
        for table in inspector.get_table_names()
    } | {"revision": version(engine) if inspector.has_table(VERSION_TABLE) else None}


def assert_lists_requests(status: subprocess.CompletedProcess[str], rows: list[dict]) -> None:
    """`repovault status` shows each request with its status, source and creation time."""
    assert status.returncode == 0, status.stderr
    lines = {
        line.split()[0]: line
        for line in status.stdout.splitlines()[1:]
        if not line.startswith(" ")  # a row's notes (why a pending request waits)
    }
    assert set(lines) == {row["request_id"] for row in rows}
    for row in rows:
        line = lines[row["request_id"]]
        created = row["creation_timestamp"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        assert f" {row['status']} " in line and f" {row['source']} " in line
        assert created in line, line


def test_a_first_release_database_is_upgraded_with_every_row_kept(
    db_url: str, repovault: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    engine = released(db_url, FIRST_RELEASE)
    rows = request_rows(("cli", "trending", "kafka", "backfill", "ui"))  # its sources
    with engine.begin() as conn:
        conn.execute(repo_requests.insert(), rows)
    before = dump(engine)

    done = repovault("init")
    assert done.returncode == 0, done.stderr
    assert f"recognised as 0001, stamped; upgraded from 0001 to {head()}" in done.stdout
    assert version(engine) == [head()]
    assert_kept(before, engine)
    assert_lists_requests(repovault("status", "--limit", "100"), rows)

    # what came after the first release works on it: tracked sources and their `keep`
    assert repovault("track", "add", "github:org/Acme", "--no-lfs").returncode == 0
    listed = repovault("track", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^github:org/Acme\s+lfs=no\s+active\s", listed.stdout, re.M), listed.stdout


def test_a_699cc7d_database_is_stamped_with_every_row_kept(
    db_url: str, repovault: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """The tables 699cc7d made with create_all, without a version: stamped as 0003, the
    revision they match, and upgraded."""
    engine = released(db_url, "699cc7d")
    rows = request_rows(("cli", "api", "track", "refresh"))
    with engine.begin() as conn:
        conn.execute(repo_requests.insert(), rows)
        conn.execute(
            repo_sources.insert(),
            {
                "source_id": "github-org:github.com/acme",
                "kind": "github-org",
                "name": "Acme",
                "host": "github.com",
                "skip_forks": True,
                "skip_archived": False,
                "include": "tool*",
                "keep": '{"wiki": false}',
                "added_at": T0,
                "last_listed_at": T0 + timedelta(hours=1),
                "status": "active",
            },
        )
        conn.execute(
            repo_state.insert(),
            [
                {
                    "repo_id": row["repo_id"],
                    "repo_url": row["repo_url"],
                    "source_id": "github-org:github.com/acme",
                    "last_checked_at": T0,
                    "refs_digest": "f" * 64,
                    "upstream": "active",
                    "consecutive_failures": 0,
                    "last_snapshot_id": row["snapshot_id"],
                }
                for row in rows
                if row["repo_id"]
            ],
        )
    before = dump(engine)

    done = repovault("init")
    assert done.returncode == 0, done.stderr
    assert f"recognised as 0003, stamped; upgraded from 0003 to {head()}" in done.stdout
    assert version(engine) == [head()]
    assert_kept(before, engine)
    assert_lists_requests(repovault("status", "--limit", "100"), rows)
    listed = repovault("track", "list")
    assert re.search(
        r"^github:org/Acme\s+no forks, include tool\*, wiki=no\s+active\s+5\s", listed.stdout, re.M
    ), listed.stdout


def test_init_twice_the_second_changes_nothing_and_says_so(
    db_url: str, repovault: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    first = repovault("init")
    assert first.returncode == 0, first.stderr
    masked = make_url(db_url).render_as_string()  # the password hidden
    assert f"lineage database at {masked}: upgraded from no tables to {head()}" in first.stdout
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(repo_requests.insert(), request_rows(("cli",)))
    before = (dump(engine), schema(engine))

    second = repovault("init")
    assert second.returncode == 0, second.stderr
    assert f"lineage database at {masked}: already at {head()}, the newest schema" in second.stdout
    assert (dump(engine), schema(engine)) == before


# --- refusals: one line, exit 1, nothing changed -------------------------------------------------


def test_a_database_a_newer_repovault_migrated_is_refused_untouched(
    db_url: str, repovault: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    lineage = open_lineage(db_url)
    lineage.record_pending("https://github.com/acme/tool", "github.com/acme/tool", "cli")
    engine = lineage.engine
    with engine.begin() as conn:  # what a future revision 0099 might have done
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
        conn.exec_driver_sql("ALTER TABLE repo_requests ADD COLUMN priority INTEGER")
    before = (dump(engine), schema(engine))
    lineage.dispose()

    for args in (["init"], ["status"]):
        done = repovault(*args)
        assert done.returncode == 1 and done.stdout == ""  # init created no topics either
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"repovault {args[0]}: the lineage database at ")
        for said in ("schema revision 0099", f"its newest is {head()}", "upgrade RepoVault"):
            assert said in done.stderr
    with pytest.raises(SchemaMismatch, match=f"revision 0099.*its newest is {head()}"):
        open_lineage(db_url)
    env = {"REPOVAULT_DB_URL": db_url, "REPOVAULT_LOCAL_STORE": str(tmp_path / "store")}
    serve = str(Path(sys.executable).with_name("repovault"))
    with serving(lambda port: [serve, "serve", "--port", str(port)], tmp_path / "log", env) as port:
        # any API token: checking it needs the database, which is refused
        answer = requests.get(
            f"http://127.0.0.1:{port}/api/requests",
            headers={"Authorization": f"Bearer rvt_{'x' * 43}"},
            timeout=30,
        )
    assert answer.status_code == 503
    assert "schema revision 0099" in answer.json()["error"] and PASSWORD not in answer.text
    assert (dump(engine), schema(engine)) == before


def test_tables_no_release_made_are_refused_untouched(
    db_url: str, repovault: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    engine = create_engine(db_url)
    repo_sources.create(engine)  # tracked sources without the requests table: no release's
    before = schema(engine)

    done = repovault("init")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "has tables no RepoVault release created (repo_sources: added_at, error," in done.stderr
    assert schema(engine) == before


# --- the head revision is tables.py; opening is one query; concurrent opens --------------------


def test_the_head_revision_is_exactly_tables_py(db_url: str) -> None:
    """A column, table or index added to tables.py without a revision fails here."""
    engine = open_lineage(db_url).engine
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=context_options(conn))
        assert compare_metadata(context, metadata) == []

        ahead = MetaData()  # tables.py with a column no revision adds: the check sees it
        for table in metadata.tables.values():
            table.to_metadata(ahead)
        ahead.tables["repo_sources"].append_column(Column("added_later", Text))
        assert [diff[0] for diff in compare_metadata(context, ahead)] == ["add_column"]


def test_opening_a_database_at_head_is_one_query(db_url: str) -> None:
    open_lineage(db_url).dispose()
    executed: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        executed.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        open_lineage(db_url).dispose()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert executed == [f"SELECT version_num FROM {VERSION_TABLE}"]


def test_processes_opening_a_new_database_at_once_create_it_once(db_url: str) -> None:
    """Four processes open the empty database at the same instant: one creates the tables under
    the lock, the others wait and find them."""
    at = time.time() + 3  # past every process's imports
    opener = (
        "import sys, time; from repovault_pipeline.core.lineage.requests import open_lineage; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); open_lineage(sys.argv[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", opener, db_url, str(at)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, "\n".join(errors)
    assert version(create_engine(db_url)) == [head()]
