"""`repovault track add|list|remove` against PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select

from repovault_pipeline.cli import main
from repovault_pipeline.core.lineage.requests import now
from repovault_pipeline.core.lineage.tables import repo_sources
from repovault_pipeline.core.sources.fleet import FleetStore


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("repo_sources"):
            return 0
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(repo_sources)).scalar_one()
    finally:
        engine.dispose()


def test_track_add_list_remove(private_lineage: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["track", "list"]) == 0
    assert "no tracked sources" in capsys.readouterr().out
    assert (
        main(
            [
                "track",
                "add",
                "github:org/Acme",
                "--skip-forks",
                "--include",
                "tool*",
                "--exclude",
                "*-old",
            ]
        )
        == 0
    )
    assert "tracking github:org/Acme (github-org:github.com/acme)" in capsys.readouterr().out
    assert main(["track", "add", "gitlab:group/grp/sub", "--skip-archived", "--no-lfs"]) == 0
    capsys.readouterr()
    assert main(["track", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["source", "filters", "status", "repos", "last_listing", "error"]
    assert cells(out[1]) == [
        "github:org/Acme",
        "no forks, include tool*, exclude *-old",
        "active",
        "0",
        "-",
    ]
    assert cells(out[2])[:2] == ["gitlab:group/grp/sub", "no archived, lfs=no"]

    assert main(["track", "remove", "github:org/acme"]) == 0
    assert "stay in the vault" in capsys.readouterr().out
    assert main(["track", "remove", "github:org/acme"]) == 1
    assert capsys.readouterr().err.strip() == (
        "repovault track remove: github:org/acme is not tracked"
    )
    assert main(["track", "list"]) == 0
    listed = capsys.readouterr().out
    assert "gitlab:group/grp/sub" in listed and "Acme" not in listed
    assert _count(private_lineage) == 2  # removed, not deleted

    # Adding it again resumes it with the new filters.
    assert main(["track", "add", "github:org/acme"]) == 0
    capsys.readouterr()
    assert main(["track", "list"]) == 0
    assert cells(capsys.readouterr().out.splitlines()[1])[:3] == ["github:org/Acme", "-", "active"]


@pytest.mark.parametrize(
    ("spec", "source_id", "host"),
    [
        ("gitea:org/Forgejo", "gitea-org:codeberg.org/forgejo", "codeberg.org"),
        ("gitea:user/ann", "gitea-user:codeberg.org/ann", "codeberg.org"),
        ("bitbucket:workspace/team", "bitbucket-ws:bitbucket.org/team", "bitbucket.org"),
    ],
)
def test_tracking_gitea_and_bitbucket_says_when_their_host_is_not_allowed(
    private_lineage: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    source_id: str,
    host: str,
) -> None:
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com")
    assert main(["track", "add", spec]) == 0
    said = capsys.readouterr()
    assert f"tracking {spec} ({source_id})" in said.out
    assert said.err.strip() == (
        f"note: {host} is not in REPOVAULT_ALLOWED_HOSTS=github.com: its repositories are listed "
        "but refused until it is added"
    )
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", f"github.com,{host}")
    assert main(["track", "add", spec, "--skip-forks", "--replace"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["track", "list"]) == 0
    assert spec in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["github:acme"], "is not a source; give github:org/NAME"),
        (["bitbucket:team/x"], "is not a source"),
        (["gitea:acme"], "is not a source; give github:org/NAME"),
        (["gitea:org/"], "gitea:org/NAME, gitea:user/NAME or bitbucket:workspace/NAME"),
        (["bitbucket:workspace"], "is not a source"),
        (["bitbucket:workspace/a/b"], "is not a Bitbucket workspace name"),
        (["gitea:user/.hidden"], "is not a Gitea owner name"),
        (["github:org/bad--name"], "is not a GitHub organisation or user name"),
        (["gitlab:group/a/../b"], "is not a GitLab group path"),
        (["github:org/acme", "--include", "a,b"], "give one non-empty glob without commas"),
    ],
)
def test_bad_sources_are_one_line_and_change_nothing(
    private_lineage: str, capsys: pytest.CaptureFixture, argv: list[str], reason: str
) -> None:
    assert main(["track", "add", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and reason in err
    assert err.startswith("repovault track: ")
    assert _count(private_lineage) == 0


def test_track_add_of_a_tracked_source_changes_nothing_without_replace(
    private_lineage: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """A second `track add` with other filters is refused (the console script, from a folder
    of its own) with what is tracked and how to change it; `--replace` changes them, says from
    what, and makes the source due for listing."""
    assert main(["track", "add", "github:org/acme", "--skip-forks", "--no-wiki"]) == 0
    capsys.readouterr()
    assert main(["track", "add", "github:org/Acme", "--no-wiki", "--skip-forks"]) == 0
    assert capsys.readouterr().out.strip() == (
        "github:org/Acme is already tracked with no forks, wiki=no; nothing changed"
    )

    fleet = FleetStore(create_engine(private_lineage))
    listed_at = now()
    fleet.record_listing("github-org:github.com/acme", listed_at, True, None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = str(Path(sys.executable).with_name("repovault"))
    refused = subprocess.run(
        [script, "track", "add", "github:org/acme", "--include", "tool*"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        "repovault track: github:org/acme is already tracked with no forks, wiki=no; to track "
        "it with include tool* instead, repeat the command with --replace"
    )
    assert list(elsewhere.iterdir()) == []  # nothing written where the command ran
    assert main(["track", "list"]) == 0
    listed = cells(capsys.readouterr().out.splitlines()[1])
    assert listed[:2] == ["github:org/acme", "no forks, wiki=no"]
    assert fleet.sources(due_before=listed_at) == []  # listed, so not due

    assert main(["track", "add", "github:org/acme", "--include", "tool*", "--replace"]) == 0
    assert capsys.readouterr().out.startswith(
        "tracking github:org/acme (github-org:github.com/acme) with include tool* "
        "(was: no forks, wiki=no)"
    )
    assert main(["track", "list"]) == 0
    listed = cells(capsys.readouterr().out.splitlines()[1])
    assert listed[:2] == ["github:org/acme", "include tool*"]
    assert [row.source.spec for row in fleet.sources(due_before=listed_at)] == ["github:org/acme"]
    assert _count(private_lineage) == 1
