"""Fixtures: the real servers (git over HTTP, S3, PostgreSQL) and an environment pointing at them.

Locally, a service that cannot run skips its tests with the reason; with CI=true it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from tests.support import servers
from tests.support.api import SHARED_KEYS, SharedApi, make_token, serve_command, session
from tests.support.kafka import OwnBroker, speaks_kafka
from tests.support.ordering import long_ones_first, long_rank
from tests.support.repos import ServedRepo
from tests.support.servers import (
    ServerDidNotStart,
    git_http_server,
    port_open,
    s3_server,
    serving,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Read when repovault_pipeline.definitions loads (here, and in every code server and run worker a
# test starts): a retried step waits nothing instead of 5, 10 and 20 seconds.
os.environ.setdefault("REPOVAULT_RETRY_DELAY_S", "0")
PG_ADMIN_URL = os.environ.get(
    "REPOVAULT_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests start first, one per xdist worker (`tests.support.ordering`)."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = long_ones_first(items, lambda item: long_rank(item.nodeid), workers)


def missing_service(reason: str) -> None:
    """Fail in CI, skip elsewhere: a missing service never hides in a green CI run."""
    if IN_CI:
        pytest.fail(f"required test service missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="session")
def git_server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the git server logs every request (`tests.support.git_http_server`)."""
    return tmp_path_factory.mktemp("logs") / "git.log"


@pytest.fixture(scope="session")
def git_base_url(served_root: Path, git_server_log: Path) -> Iterator[str]:
    with git_http_server(served_root, git_server_log) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("logs") / "moto.log") as url:
        yield url


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped at the end."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"repovault_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.__class__.__name__}")
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test (an address with no server)."""
    with servers.closed_port() as port:
        yield port


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the session, dropped at the end."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def private_lineage(vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A lineage database of the test's own: reconciliation acts on every row of the table, so
    a test of it must not see (or close, or republish) the rows other tests left behind."""
    with fresh_database() as url:
        monkeypatch.setenv("REPOVAULT_DB_URL", url)
        vault_env["REPOVAULT_DB_URL"] = url
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker `.ci/run` or `make run` started on 127.0.0.1:9092 (when what listens there
    answers Kafka requests), else a Tansu of our own."""
    if port_open("127.0.0.1", 9092) and speaks_kafka("127.0.0.1:9092"):
        yield "127.0.0.1:9092"
        return
    try:
        broker = OwnBroker(tmp_path_factory.mktemp("logs") / "broker.log")
    except (ServerDidNotStart, OSError) as exc:
        missing_service(f"no Kafka-protocol broker: {exc}")
    yield broker.bootstrap
    broker.stop()


def service_env(home: Path, s3_endpoint: str, db_url: str, kafka_bootstrap: str) -> dict[str, str]:
    """The environment of RepoVault on the test services: topics and bucket prefix of no other
    test, run or worker; working folders under `home`."""
    unique = uuid.uuid4().hex[:12]
    return {
        "REPOVAULT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "REPOVAULT_TOPIC_PENDING": f"pendientes-{unique}",
        "REPOVAULT_TOPIC_IN_PROGRESS": f"en_proceso-{unique}",
        "REPOVAULT_TOPIC_COMPLETED": f"completados-{unique}",
        "REPOVAULT_TOPIC_REJECTED": f"rechazados-{unique}",
        "REPOVAULT_S3_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "REPOVAULT_BUCKET_PREFIX": f"t{unique}-",
        "REPOVAULT_DB_URL": db_url,
        "REPOVAULT_ALLOWED_HOSTS": "127.0.0.1",
        "REPOVAULT_ALLOWED_SCHEMES": "http,https,ssh",
        "REPOVAULT_WORK_DIR": str(home / "work"),
        "REPOVAULT_LOCAL_STORE": str(home / "store"),
        "REPOVAULT_KEEP_SNAPSHOTS": "10",
        "DAGSTER_HOME": str(home / "dagster_home"),
        "REPOVAULT_HOME": str(home / "home"),
    }


@pytest.fixture
def vault_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    s3_endpoint: str,
    pg_url: str,
    kafka_bootstrap: str,
) -> dict[str, str]:
    """Environment of one test: its own bucket prefix and topics, the S3 server, the broker,
    PostgreSQL lineage."""
    env = service_env(tmp_path, s3_endpoint, pg_url, kafka_bootstrap)
    for key in ("GITHUB_TOKEN", "REPOVAULT_SSH_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster_home").mkdir()
    return env


@pytest.fixture
def make_repo(served_root: Path, git_base_url: str, tmp_path: Path) -> Callable[..., ServedRepo]:
    """A new repository served over HTTP, with a unique owner so tests never collide."""

    def make(name: str = "project", owner: str | None = None) -> ServedRepo:
        owner = owner or f"owner{uuid.uuid4().hex[:8]}"
        return ServedRepo(served_root, tmp_path / "work-copies", git_base_url, owner, name)

    return make


@pytest.fixture
def branched_repo(make_repo: Callable[..., ServedRepo]) -> ServedRepo:
    """A served repository with two branches (main, feature) and an annotated tag (v1)."""
    repo = make_repo("restorable")
    repo.commit({"a.txt": "a\n"})
    repo.tag("v1", annotated=True)
    repo.branch("feature")
    repo.commit({"b.txt": "b\n"})
    repo.checkout("main")
    repo.push()
    return repo


@pytest.fixture
def archived(vault_env: dict[str, str], branched_repo: ServedRepo):
    """A repository (two branches, an annotated tag) archived into the S3 server, for the tests
    that restore, verify, count and corrupt it."""
    repo = branched_repo
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    return repo, result


@pytest.fixture(scope="module")
def shared_api(
    tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, kafka_bootstrap: str
) -> Iterator[SharedApi]:
    """`repovault serve` on a loopback port and a lineage database of its own, for the tests of
    one module (on one xdist worker) that need no server configuration of their own: a server
    start and a database costs seconds, each test's `api` empties it instead."""
    home = tmp_path_factory.mktemp("shared-api")
    log = home / "api.log"
    with fresh_database() as db:
        env = service_env(home, s3_endpoint, db, kafka_bootstrap)
        with serving(serve_command, log, env) as port:
            yield SharedApi(f"http://127.0.0.1:{port}", env, log)


@pytest.fixture
def api(vault_env: dict[str, str], shared_api: SharedApi, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's `repovault serve`, emptied (`SharedApi.empty`), and the test's environment on
    its database, topics and bucket prefix: the test sees what a server of its own would show."""
    shared_api.empty()
    for key in SHARED_KEYS:
        monkeypatch.setenv(key, shared_api.env[key])
        vault_env[key] = shared_api.env[key]
    return shared_api.url


@pytest.fixture
def private_api(vault_env: dict[str, str], private_lineage: str, tmp_path: Path) -> Iterator[str]:
    """`repovault serve` of the test's own, on its own lineage database and topics: for a test
    whose injector reads `pendientes` as the consumer group, whose offsets would outlive the
    topics `SharedApi.empty` deletes."""
    with serving(serve_command, tmp_path / "api.log") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def private_http(private_api: str) -> Iterator[requests.Session]:
    """HTTP calls with an admin API token of the `private_api` server's lineage database."""
    with session(make_token("admin")) as calls:
        yield calls


@pytest.fixture
def api_log(shared_api: SharedApi) -> Path:
    """What the module's `repovault serve` logged, every test of the module's calls included."""
    return shared_api.log


@pytest.fixture
def http(api: str) -> Iterator[requests.Session]:
    """HTTP calls with an admin API token of the `api` server's lineage database."""
    with session(make_token("admin")) as calls:
        yield calls
