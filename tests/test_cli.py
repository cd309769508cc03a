"""`repovault` as a user runs it: exit codes, one-line reasons, nothing written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine.url import make_url

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.forges.listing import parse_source
from tests.support.kafka import read_all
from tests.support.tcp_proxy import BreakableProxy

TOKEN = "ghp_" + "Qw7x" * 9  # token-shaped: the exact value a leak would show
PASSWORD = "S3cretPassw0rd"
SECRETS = (TOKEN, PASSWORD)
BAD_INPUTS = [
    ("file:///etc", "local paths"),
    ("ext::sh -c id", "transport helpers"),
    ("--upload-pack=x", "starts with '-'"),
    (f"https://user:{TOKEN}@github.com/a/b", "GITHUB_TOKEN"),
    (f"user:{PASSWORD}@github.com:pallets/flask.git", "GITHUB_TOKEN"),
    (f"https://github.com/pallets/flask.git?private_token={PASSWORD}", "query strings"),
    ("https://evil.example.com/a/b", "host 'evil.example.com' is not allowed"),
    ("http://github.com/a/b", "scheme 'http' is not allowed"),
    ("../", "local paths"),
    ("x" * 10_000, "at most 512"),
    ("", "empty"),
]


@pytest.fixture
def github_only(vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com")
    monkeypatch.setenv("REPOVAULT_ALLOWED_SCHEMES", "https,ssh")


@pytest.mark.parametrize(
    ("raw", "reason"), BAD_INPUTS, ids=[r[:24] or "empty" for r, _ in BAD_INPUTS]
)
def test_restore_refuses_bad_input_with_one_line_and_writes_nothing(
    github_only: None, tmp_path: Path, capsys: pytest.CaptureFixture, raw: str, reason: str
) -> None:
    dest = tmp_path / "dest"
    assert cli(["restore", "--", raw, str(dest)]) == 2
    err = capsys.readouterr().err
    assert reason in err
    assert err.count("\n") == 1 and len(err) < 400
    assert not any(secret in err for secret in SECRETS)
    assert not dest.exists()


def test_status_of_an_unknown_request(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    assert cli(["status", f"https://127.0.0.1/nobody/never-{uuid.uuid4().hex}"]) == 1
    assert "no requests for" in capsys.readouterr().err


def test_init_is_idempotent_and_console_script_works(vault_env: dict[str, str]) -> None:
    for _ in range(2):
        done = subprocess.run(
            [str(Path(sys.executable).with_name("repovault")), "init"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert "lineage database at" in done.stdout and "the newest schema" in done.stdout


@pytest.mark.parametrize(
    ("raw", "reason"), BAD_INPUTS, ids=[r[:24] or "empty" for r, _ in BAD_INPUTS]
)
def test_submit_refuses_bad_input_publishes_nothing_records_nothing(
    github_only: None,
    vault_env: dict[str, str],
    capsys: pytest.CaptureFixture,
    raw: str,
    reason: str,
) -> None:
    rows_before = open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000)
    assert cli(["submit", "--", raw]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1
    assert not any(secret in err for secret in SECRETS)
    assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"], quiet_s=0.3) == []
    assert open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000) == rows_before


def test_definitions_validate(tmp_path: Path) -> None:
    """What an operator runs before deploying; an empty DAGSTER_HOME means an ephemeral instance
    (the repository root's dagster.yaml is the production one and wants PostgreSQL)."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    done = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout


@pytest.mark.parametrize(
    "raw",
    [
        f"user:{PASSWORD}@127.0.0.1:pallets/flask.git",
        f"https://127.0.0.1/pallets/flask.git?private_token={PASSWORD}",
    ],
    ids=["scp-like", "query"],
)
def test_the_two_forms_that_leaked_a_password_are_refused_without_it(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture, raw: str
) -> None:
    """Issue 10's reproduction: both printed the password on stderr."""
    rows_before = open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000)
    assert cli(["submit", raw]) == 2
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err and err.count("\n") == 1
    assert "127.0.0.1" in err  # still says which input was refused
    assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"], quiet_s=0.3) == []
    assert open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000) == rows_before


def test_status_never_echoes_a_secret_it_cannot_read(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    assert cli(["status", f"https://u:{PASSWORD}@127.0.0.1/a/b?token={TOKEN}"]) == 2
    err = capsys.readouterr().err
    assert "neither a request id nor a valid URL" in err and err.count("\n") == 1
    assert not any(secret in err for secret in SECRETS)


# --- outages: one line naming what is unreachable (password hidden) and what to do; exit 1 ----

DB_PASSWORD = "Pg5ecretW0rd"


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, *expected: str) -> None:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert DB_PASSWORD not in err


@pytest.mark.parametrize(
    "args", [["init"], ["submit", "http://127.0.0.1:9/o/r.git"], ["status"]], ids=" ".join
)
def test_database_down_is_one_line_naming_it(
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    args: list[str],
    closed_port: int,
) -> None:
    closed = closed_port
    monkeypatch.setenv(
        "REPOVAULT_DB_URL", f"postgresql+psycopg2://repovault:{DB_PASSWORD}@127.0.0.1:{closed}/x"
    )
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert_one_line(
        err,
        f"repovault {args[0]}: cannot reach the lineage database at",
        f"127.0.0.1:{closed}/x",
        "REPOVAULT_DB_URL",
    )
    if args[0] == "submit":  # nothing was queued for a request that has no row
        assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"], quiet_s=0.3) == []


def test_database_cut_mid_command_is_one_line(
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    pg_url: str,
) -> None:
    """PostgreSQL through a proxy that resets the connection half way through `status`."""
    port = make_url(pg_url).port or 5432
    whole = BreakableProxy(port)
    monkeypatch.setenv("REPOVAULT_DB_URL", proxied(pg_url, whole.port))
    assert run_cli(["status"], capsys)[0] == 0
    whole.close()

    cut = BreakableProxy(port, break_after=whole.forwarded // 2)
    monkeypatch.setenv("REPOVAULT_DB_URL", proxied(pg_url, cut.port))
    code, _, err = run_cli(["status"], capsys)
    cut.close()
    assert cut.broken, "the proxy never cut the connection"
    assert code == 1
    assert_one_line(err, "repovault status: cannot reach the lineage database at")


def proxied(db_url: str, port: int) -> str:
    return make_url(db_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_broker_down_is_one_line_naming_it(
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    closed_port: int,
) -> None:
    bootstrap = f"127.0.0.1:{closed_port}"
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", bootstrap)
    before = open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000)
    for args in (["submit", "http://127.0.0.1:9/o/r.git"], ["init"]):
        code, _, err = run_cli(args, capsys)
        assert code == 1
        assert_one_line(err, f"repovault {args[0]}: ", bootstrap, "REPOVAULT_KAFKA_BOOTSTRAP")
    assert open_lineage(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000) == before


@pytest.mark.parametrize("fault", ["closed port", "cut proxy"])
def test_object_store_down_is_one_line_naming_it(
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    fault: str,
    closed_port: int,
) -> None:
    proxy = None
    if fault == "closed port":
        endpoint = f"http://127.0.0.1:{closed_port}"
    else:  # accepts the connection, resets it at the first request
        proxy = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]), 0)
        endpoint = proxy.endpoint
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", endpoint)
    for args in (["list"], ["restore", "http://127.0.0.1:9/o/r.git", str(tmp_path / "dest")]):
        code, _, err = run_cli(args, capsys)
        assert code == 1
        assert_one_line(
            err,
            f"repovault {args[0]}: cannot reach the object store at {endpoint}",
            "REPOVAULT_S3_ENDPOINT",
        )
    assert not (tmp_path / "dest").exists()
    if proxy is not None:
        assert proxy.broken
        proxy.close()


STORES_THAT_HANG = [
    ("lineage database", ["status"]),
    ("lineage database", ["submit", "http://127.0.0.1:9/o/r.git"]),
    ("object store", ["list"]),
    ("object store", ["verify", "127.0.0.1:9/o/r"]),
]


@pytest.mark.parametrize(
    ("service", "args"), STORES_THAT_HANG, ids=[a[0] for _, a in STORES_THAT_HANG]
)
def test_a_store_that_never_answers_ends_the_command_with_one_line(
    vault_env: dict[str, str], tmp_path: Path, service: str, args: list[str]
) -> None:
    """Issue 20, item 4: PostgreSQL or S3 accepting connections and never answering hung
    `status` for 600 s and `list`/`verify` silently. The command, run by a user from another
    folder, ends by itself with the one line of a refused port, naming the setting it waited."""
    hole = BreakableProxy.black_hole()
    env = {**os.environ, "REPOVAULT_DB_TIMEOUT_S": "1", "REPOVAULT_S3_TIMEOUT_S": "1"}
    if service == "lineage database":
        where = f"127.0.0.1:{hole.port}/x"
        env["REPOVAULT_DB_URL"] = f"postgresql+psycopg2://repovault:{DB_PASSWORD}@{where}"
        waited = "REPOVAULT_DB_TIMEOUT_S=1s"
    else:
        where = env["REPOVAULT_S3_ENDPOINT"] = hole.endpoint
        waited = "REPOVAULT_S3_TIMEOUT_S=1s"
    repovault = str(Path(sys.executable).with_name("repovault"))
    # The subprocess timeout is only a safety net: a hang fails the test instead of the suite.
    done = subprocess.run(
        [repovault, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    hole.close()
    assert hole.held, "the command never connected: this tested a refusal, not a silence"
    assert done.returncode == 1
    assert_one_line(
        done.stderr, f"repovault {args[0]}: cannot reach the {service} at", where, waited
    )
    if args[0] == "submit":  # nothing was queued for a request that has no row
        assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"], quiet_s=0.3) == []


LONG_ERROR = (
    "clone failed: fatal: unable to access 'http://127.0.0.1:9/o/r.git/': Failed to connect to "
    "127.0.0.1 port 9 after 0 ms: Couldn't connect to server; check the URL and that the host "
    "is reachable, then submit again (the tail a table used to cut off)"
)


def repovault(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script, as a user calls it: from a folder of their own."""
    exe = str(Path(sys.executable).with_name("repovault"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)


def test_status_of_one_request_shows_its_whole_error_wrapped_and_escaped(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending("http://127.0.0.1:9/o/r.git", "127.0.0.1:9/o/r", "cli")
    error = (
        "fatal: remote error:\n  line two\r\n\x1b[31mred\x1b[0m \u202eevil\u2028end " + "x" * 150
    )
    lineage.record_finished(request_id, "failed", error=error)

    code, out, _ = run_cli(["status", request_id], capsys)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith(" "))
    assert (fields["request_id"], fields["status"]) == (request_id, "failed")
    # Every line of the error, whole: the terminal's control characters written as escapes.
    text = " ".join(
        line.split(None, 1)[-1] if line.startswith("error") else line.strip()
        for line in out[out.index("error ") :].splitlines()
    )
    assert "fatal: remote error:" in text and "line two" in text
    assert "\\x1b[31mred\\x1b[0m \\u202eevil" in text and "end" + "x" * 10 in text.replace(" ", "")
    assert "x" * 150 in text.replace(" ", "")
    assert not any(c in out for c in "\x1b\u202e\u2028\r")
    assert max(len(line) for line in out.splitlines()) <= 100


def test_lists_clip_errors_and_verbose_shows_them_whole(
    private_lineage: str, capsys: pytest.CaptureFixture
) -> None:
    lineage = open_lineage(private_lineage)
    request_id = lineage.record_pending("http://127.0.0.1:9/o/r.git", "127.0.0.1:9/o/r", "cli")
    lineage.record_finished(request_id, "failed", error=LONG_ERROR)
    source = "github:user/someone"
    assert cli(["track", "add", source]) == 0
    FleetStore(lineage.engine).record_listing(
        parse_source(source, Settings.from_env()).source_id, now(), False, LONG_ERROR
    )
    capsys.readouterr()
    tail = "(the tail a table used to cut off)"
    for args in (["status"], ["track", "list"]):
        code, out, _ = run_cli(args, capsys)
        assert code == 0 and tail not in out and "…" in out, out
        code, out, _ = run_cli([*args, "--verbose"], capsys)
        assert code == 0 and "…" not in out
        assert " ".join(out.split()).count("then submit again " + tail) == 1, out


def test_the_cli_finds_its_home_from_any_folder_and_creates_nothing_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str
) -> None:
    """REPOVAULT_HOME, not the current folder, says where the embedded default's data is; a
    command that only reads never creates a lineage database (issue 19, item 10)."""
    home, elsewhere, other = tmp_path / "home", tmp_path / "elsewhere", tmp_path / "other"
    elsewhere.mkdir()
    other.mkdir()
    for name in [k for k in os.environ if k.startswith("REPOVAULT_") or k == "DAGSTER_HOME"]:
        monkeypatch.delenv(name)
    unique = uuid.uuid4().hex[:12]
    monkeypatch.setenv("REPOVAULT_HOME", str(home))
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", kafka_bootstrap)
    for topic in ("PENDING", "IN_PROGRESS", "COMPLETED", "REJECTED"):
        monkeypatch.setenv(f"REPOVAULT_TOPIC_{topic}", f"{topic.lower()}-{unique}")

    for args in (["status"], ["track", "list"]):
        done = repovault(args, elsewhere)
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1
        assert f"no lineage database at {home}/lineage.db" in done.stderr
        assert "repovault init" in done.stderr and "REPOVAULT_HOME" in done.stderr
    listed = repovault(["list"], elsewhere)
    assert (
        listed.returncode == 0 and f"no repositories archived yet in {home}/store" in listed.stderr
    )
    assert not home.exists() and list(elsewhere.iterdir()) == []

    init = repovault(["init"], elsewhere)
    assert init.returncode == 0, init.stderr
    assert f"RepoVault home (REPOVAULT_HOME): {home}" in init.stdout
    assert (home / "lineage.db").is_file() and list(elsewhere.iterdir()) == []
    submitted = repovault(["submit", "https://github.com/pallets/flask"], elsewhere)
    assert submitted.returncode == 0, submitted.stderr
    seen = repovault(["status"], other)
    assert seen.returncode == 0 and submitted.stdout.strip() in seen.stdout
