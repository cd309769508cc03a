"""`repovault` as a user runs it: exit codes, one-line reasons, nothing written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.resources import lineage_store
from tests.support.kafka import read_all

BAD_INPUTS = [
    ("file:///etc", "local paths"),
    ("ext::sh -c id", "transport helpers"),
    ("--upload-pack=x", "starts with '-'"),
    ("https://user:tok@github.com/a/b", "GITHUB_TOKEN"),
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
    assert "tok@" not in err
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
    assert "repo_requests" in done.stdout


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
    rows_before = lineage_store(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000)
    assert cli(["submit", "--", raw]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1 and "tok@" not in err
    assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"], quiet_s=0.3) == []
    assert lineage_store(vault_env["REPOVAULT_DB_URL"]).find(limit=10_000) == rows_before


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
