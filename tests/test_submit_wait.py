"""`repovault submit --wait` and `status` as a user runs them while the daemon works: the request
followed to its end with the exit code its outcome deserves, and why a queued one waits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.core.vault.upload import UploadProgress
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import REPOSITORIES
from repovault_pipeline.runqueue import QueueLimit, phase, queue_reasons
from tests.support.daemon import LAUNCH_AT_ONCE, QUEUED, daemon_workspace, sensor_tick
from tests.support.repos import ServedRepo

SENSOR = "kafka_injector_sensor"
INTERVAL_S = 10  # the injector's minimum interval
REPOVAULT = str(Path(sys.executable).with_name("repovault"))


def start_wait(urls: list[str], cwd: Path) -> subprocess.Popen[str]:
    """`repovault submit --wait URL...` from a folder of the user's, once every request is
    recorded and published: its first progress line per URL has been printed."""
    proc = subprocess.Popen(
        [REPOVAULT, "submit", "--wait", "--timeout", "240", *urls],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = [proc.stderr.readline() for _ in urls]
    assert all("pending; no run yet" in line for line in first), first
    return proc


def test_submit_wait_ends_with_each_outcome_and_fails_when_one_failed(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("wait-ok")
    repo.commit({"README.md": "followed to its end\n"})
    repo.push()
    missing = repo.url.replace("wait-ok.git", "never-pushed.git")
    assert cli(["init"]) == 0
    with (
        instance_for_test(overrides=LAUNCH_AT_ONCE) as instance,
        daemon_workspace(instance) as workspace,
    ):
        waiting = start_wait([repo.url, missing], tmp_path)
        sensor_tick(workspace, SENSOR)
        out, err = waiting.communicate(timeout=240)
    assert waiting.returncode == 1, (out, err)  # one of the two failed
    request_ids, ends = out.splitlines()[:2], out.splitlines()[2:]
    outcome = {line.split()[0]: line.split(None, 3)[1:] for line in ends}
    assert set(outcome) == set(request_ids)
    repo_id, status, rest = outcome[request_ids[0]]
    head = repo.refs()["refs/heads/main"][:12]
    assert (repo_id, status) == (repo.repo_id, "completed")
    assert rest.startswith("snapshot ") and rest.endswith(f"head {head}")
    repo_id, status, reason = outcome[request_ids[1]]
    assert (repo_id, status) == (repo.repo_id.replace("wait-ok", "never-pushed"), "failed")
    assert "repository not found" in reason and "never-pushed.git" in reason


def test_submit_wait_gives_up_at_its_timeout_and_says_how_to_follow(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    """No daemon takes the request: --timeout ends the wait (exit 1), the request goes on."""
    url = "http://127.0.0.1:9/o/never-taken.git"
    assert cli(["submit", "--timeout", "1", url]) == 2
    assert "--timeout 1: give a positive number of seconds with --wait" in capsys.readouterr().err
    assert cli(["submit", "--wait", "--timeout", "1", url]) == 1
    out, err = capsys.readouterr()
    [request_id] = out.split()
    assert f"{request_id}  127.0.0.1:9/o/never-taken  pending; no Dagster instance" in err
    assert (
        f"still open after --timeout 1 s (they go on): follow with `repovault status {request_id}`"
        in err
    )


def test_status_says_why_a_request_waits_in_the_run_queue(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], capsys: pytest.CaptureFixture
) -> None:
    urls = []
    for name in ("queued-a", "queued-b"):
        repo = make_repo(name)
        repo.commit({"f.txt": name})
        repo.push()
        urls.append(repo.url)
    assert cli(["submit", *urls]) == 0
    first, second = capsys.readouterr().out.split()
    with instance_for_test(overrides=QUEUED) as instance, daemon_workspace(instance) as workspace:
        sensor_tick(workspace, SENSOR)  # two runs, queued: nothing dequeues them here
        wide = {**os.environ, "COLUMNS": "200"}
        done = subprocess.run(
            [REPOVAULT, "status", "--limit", "2"], capture_output=True, text=True, env=wide
        )
        assert cli(["status", second]) == 0
    assert done.returncode == 0, done.stderr
    waiting = [line.strip() for line in done.stdout.splitlines() if line.startswith("  waiting")]
    next_pass = "no limit reached: the Dagster daemon starts it on its next pass (pending for "
    # One run is next in line, the other waits behind it (which is which depends on the order
    # the injector read the topic's partitions in).
    reasons = sorted(note.partition("(pending for ")[0] + "(pending for " for note in waiting)
    assert reasons == [
        f"waiting: queued behind 1 run; {next_pass}",
        f"waiting: queued, next in line; {next_pass}",
    ]
    fields = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert (fields["request_id"], fields["status"]) == (second, "pending")
    said = fields["waiting"].partition(" (pending for ")[0]
    assert said.startswith(("queued behind 1 run", "queued, next in line")), fields
    assert first != second


def test_an_upload_reports_its_progress_which_submit_wait_shows(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real archive run logs `uploaded n/m files, ...` while it uploads: here after every
    object (REPOVAULT_PROGRESS_EVERY_S=0; one upload at a time, so in order). Its log, replayed
    up to one of those lines into an instance of its own, is what `submit --wait` reads in the
    middle of the upload: `in_progress: uploading n/m files, ...`."""
    monkeypatch.setenv("REPOVAULT_PROGRESS_EVERY_S", "0")
    monkeypatch.setenv("REPOVAULT_UPLOAD_WORKERS", "1")
    repo = make_repo("progress")
    repo.commit({f"src/f{i:02}.txt": f"file {i}\n" * 100 for i in range(30)})
    repo.push()
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    requested = now()
    request_id = lineage.record_pending(repo.url, repo.repo_id, "cli", created_at=requested)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(REPOSITORIES, [repo.repo_id])
        result = defs.resolve_job_def("archive_repo_job").execute_in_process(
            partition_key=repo.repo_id,
            instance=instance,
            tags=request_tags(request_id, repo.url, "cli", requested),
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        entries = [r.event_log_entry for r in instance.get_records_for_run(result.run_id).records]
    lines = [e.user_message for e in entries if e.dagster_event is None]
    reports = [done for line in lines if (done := UploadProgress.parse(line))]
    total = 1 + 30  # the bundle and the tree's files
    assert [done.files for done in reports] == list(range(1, total + 1))
    assert {done.files_total for done in reports} == {total}
    assert reports[-1].bytes == reports[-1].bytes_total > 30 * 700

    row = lineage.get(request_id)
    assert row is not None and run is not None
    in_progress = replace(row, status="in_progress", worker_finishing_timestamp=None)

    def shown_after(line: str, before: int = 0) -> str:
        """What `submit --wait` shows once the run has logged up to `line` (`before` less)."""
        cut = next(n for n, e in enumerate(entries) if e.user_message == line) + 1 - before
        with instance_for_test() as replay:
            # The run as the CLI finds it; its job's snapshots are not what phase() reads.
            replay.add_run(run._replace(job_snapshot_id=None, execution_plan_snapshot_id=None))
            for entry in entries[:cut]:
                replay.store_event(entry)
            return phase(replay, in_progress, now()).step

    assert shown_after(reports[0].line(), before=1) == "in_progress: uploading"
    assert shown_after(reports[2].line()) == f"in_progress: uploading {reports[2].counts()}"
    assert reports[2].counts().startswith(f"3/{total} files, ")


HOST = {"repovault/host": "github.com", "dagster/partition": "github.com/a/b"}
LIMITS = [
    QueueLimit.from_config(
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ),
    QueueLimit.from_config(
        {"key": "repovault/host", "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
    ),
]


@pytest.mark.parametrize(
    ("running", "max_runs", "reason"),
    [
        (
            [{"repovault/host": "github.com"}] * 2,
            4,
            "2 runs against github.com in progress, its host limit (2)",
        ),
        ([{"repovault/host": "gitlab.com"}] * 2, 4, "no limit reached"),
        ([{"repovault/host": "gitlab.com"}] * 2, 2, "2 runs in progress, the instance's limit"),
        (
            [{"dagster/partition": "github.com/a/b"}],
            4,
            "another run of github.com/a/b is in progress",
        ),
    ],
)
def test_queue_reasons_name_the_limit_that_holds_a_run(
    running: list[dict[str, str]], max_runs: int, reason: str
) -> None:
    line = queue_reasons(HOST, 3, running, max_runs, LIMITS)
    assert line.startswith("queued behind 3 runs") and reason in line, line
