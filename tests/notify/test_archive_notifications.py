"""Being told about archive runs, as the daemon does it: a run ends, the notify run-status
sensors tick, their `notify_job` runs post to a webhook on loopback. A failure is told once,
after its retries, with no secret in it; a partial run with its reasons; a snapshot that does
not restore; only the events REPOVAULT_NOTIFY_EVENTS lists."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import boto3
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    instance_for_test,
)
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import (
    consume_new_runs_for_automatic_reexecution,
)

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import new_request_id, now, open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.daemon import LAUNCH_AT_ONCE, LOG, daemon_workspace, sensor_tick, wait_until
from tests.support.repos import ServedRepo, lost_lfs_object
from tests.support.ui import dry_run_sensor, launch_run
from tests.support.webhook import Webhook

FAILED = "notify_archive_failed_sensor"
DONE = "notify_archive_done_sensor"
INTERVAL_S = 11  # past their minimum interval


def archive(workspace, repo_id: str, url: str, checks: bool = True) -> str:
    """An archive run launched from archive_repo_job's launchpad for a recorded request,
    waited for; returns its run id."""
    request_id = new_request_id()
    open_lineage(os.environ["REPOVAULT_DB_URL"]).record_pending(url, repo_id, "cli", request_id)
    workspace.instance.add_dynamic_partitions(REPOSITORIES, [repo_id])
    run_id = launch_run(
        workspace, "archive_repo_job", repo_id, tags=request_tags(request_id, url, "cli", now())
    )
    return finished(workspace.instance, run_id)


def finished(instance: DagsterInstance, run_id: str) -> str:
    wait_until(
        lambda: (run := instance.get_run_by_id(run_id)) is not None and run.is_finished,
        describe=lambda: f"run {run_id} did not end",
    )
    return run_id


def notify_runs_done(instance: DagsterInstance) -> list[str]:
    """Every notify_job run, once all have ended."""

    def done():
        runs = [r for r in instance.get_runs() if r.job_name == "notify_job"]
        return runs if all(r.is_finished for r in runs) else None

    return [r.run_id for r in wait_until(done, describe=lambda: "notify runs did not end")]


def tick_both(workspace, after_s: float) -> None:
    sensor_tick(workspace, FAILED, after_s=after_s)
    sensor_tick(workspace, DONE, after_s=after_s)


def tick_until(
    workspace, webhook: Webhook, count: int, ticks: int = 4, first_tick: int = 1
) -> None:
    """Daemon ticks of both sensors (one ended run's messages a tick) until `count` messages
    arrived, then `ticks` more, after which nothing more may arrive."""
    for tick in range(first_tick, first_tick + 30):
        tick_both(workspace, tick * INTERVAL_S)
        if len(webhook.received) >= count:
            ticks -= 1
        if ticks == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{count} messages expected, got: {webhook.titles()}")


def test_a_failed_archive_is_told_once_after_its_retries_with_no_secret(
    webhook: Webhook, closed_port: int
) -> None:
    """A host that is down (the clone retried, then failed) and a URL with a token in it
    (refused at once): one message each, neither with the token or the webhook's password."""
    repo_id = f"127.0.0.1:{closed_port}/team/unreachable"
    leaky_id = f"127.0.0.1:{closed_port}/team/leaky"
    leaky_url = f"http://ci:tok3n-in-the-url@{leaky_id}.git"
    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance, daemon_workspace(instance) as ws:
        tick_both(ws, 0)  # the sensors start here: earlier runs are not theirs
        run_id = archive(ws, repo_id, f"http://{repo_id}.git")
        leaky_run = archive(ws, leaky_id, leaky_url)
        for ended in (run_id, leaky_run):
            assert instance.get_run_by_id(ended).status == DagsterRunStatus.FAILURE
        retries = instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        assert retries, "the clone was not retried: this test needs a transient failure"

        # "Test sensor" in the UI: shows the notifications it would request, sends nothing.
        shown = dry_run_sensor(ws, FAILED, None)
        time.sleep(1)
        assert webhook.received == []
        assert not [r for r in instance.get_runs() if r.job_name == "notify_job"]

        tick_until(ws, webhook, 2)  # later ticks: the same failures are not told again
        notify_runs = notify_runs_done(instance)
        logs = " ".join(str(r.user_message) for n in notify_runs for r in instance.all_logs(n))

    assert sorted(webhook.titles()) == sorted(
        f"RepoVault: archive of {r} failed" for r in (repo_id, leaky_id)
    )
    [message] = [m for m in webhook.received if repo_id in m.title]
    assert message.path == "/hook"
    assert f"repository: {repo_id}" in message.message and f"run: {run_id}" in message.message
    assert "status: failed" in message.message and "error: " in message.message
    [leaky] = [m for m in webhook.received if leaky_id in m.title]
    assert "credentials" in leaky.message  # why it was refused, without them
    for secret in ("tok3n-in-the-url", Webhook.PASSWORD):
        assert all(secret not in m.raw for m in webhook.received)
        assert secret not in logs
    assert "sent to #1 json" in logs
    assert all(r["runKey"].startswith("failed:") for r in shown["runRequests"])


def test_a_run_dagster_retries_is_told_once_by_its_last_attempt(
    webhook: Webhook, make_repo: Callable[..., ServedRepo]
) -> None:
    """Run retries on (instance `run_retries`): the first attempt, which Dagster will retry,
    says nothing; the retry, the last attempt, is told."""
    missing = make_repo("never-pushed")  # the server answers: no such repository
    retries = {"run_retries": {"enabled": True, "max_retries": 1}}
    with (
        instance_for_test(overrides={**LAUNCH_AT_ONCE, **retries}) as instance,
        daemon_workspace(instance) as ws,
    ):
        tick_both(ws, 0)
        first = archive(ws, missing.repo_id, missing.url)
        # Dagster tags the failed run just after its status: wait for it, as the sensor does.
        wait_until(
            lambda: instance.get_run_by_id(first).tags.get("dagster/will_retry") == "true",
            describe=lambda: f"run {first} was not tagged dagster/will_retry=true",
        )
        tick_both(ws, INTERVAL_S)
        # What the daemon's run retry loop does with the failed run.
        records = instance.get_run_records(RunsFilter(run_ids=[first]))
        list(consume_new_runs_for_automatic_reexecution(ws, records, LOG))
        [retry] = [r.run_id for r in instance.get_runs() if r.run_id != first]
        finished(instance, retry)
        wait_until(  # tagged just after its status, as the first attempt was
            lambda: instance.get_run_by_id(retry).tags.get("dagster/will_retry") == "false",
            describe=lambda: f"run {retry} was not tagged dagster/will_retry=false",
        )
        assert webhook.received == []  # the first attempt said nothing
        tick_until(ws, webhook, 1, first_tick=2)
        notify_runs_done(instance)

    [message] = webhook.received
    assert message.title == f"RepoVault: archive of {missing.repo_id} failed"
    assert f"run: {retry}" in message.message


def test_a_partial_run_is_told_with_its_reasons_and_only_listed_events_are_sent(
    webhook: Webhook, make_repo: Callable[..., ServedRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LFS objects the forge lost: `partial` with `lfs_missing` and the file, and no second
    message for the `restorable` check that fails for the same reason. `failed` is not listed
    in REPOVAULT_NOTIFY_EVENTS here: a failed run says nothing."""
    monkeypatch.setenv("REPOVAULT_NOTIFY_EVENTS", "partial,unrestorable")
    repo = make_repo("lost-weights")
    lost_lfs_object(repo)
    missing = make_repo("never-pushed")  # the server answers: no such repository
    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance, daemon_workspace(instance) as ws:
        tick_both(ws, 0)
        partial_run = archive(ws, repo.repo_id, repo.url)
        failed_run = archive(ws, missing.repo_id, missing.url)
        assert instance.get_run_by_id(failed_run).status == DagsterRunStatus.FAILURE
        tick_until(ws, webhook, 1)
        notify_runs_done(instance)

    [message] = webhook.received
    assert message.title == f"RepoVault: archive of {repo.repo_id} is partial"
    assert f"run: {partial_run}" in message.message
    assert "lfs_missing: 1 LFS objects" in message.message and "model.bin" in message.message


def test_a_snapshot_that_no_longer_restores_is_told(
    webhook: Webhook, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("checked")
    repo.commit({"README.md": "hello\n", "src/x.py": "x = 1\n"})
    repo.push()
    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance, daemon_workspace(instance) as ws:
        tick_both(ws, 0)
        archive(ws, repo.repo_id, repo.url)
        bucket = bucket_name(repo.repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
        s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
        s3.delete_object(Bucket=bucket, Key="tree/src/x.py")
        # "Execute check" on the asset page: a run of the check alone (the deep pass).
        check_run = finished(
            instance,
            launch_run(
                ws, "__ASSET_JOB", repo.repo_id, assets=[], checks={"repo_archive": ["restorable"]}
            ),
        )
        tick_until(ws, webhook, 1)
        notify_runs_done(instance)

    [message] = webhook.received  # the archive run before passed its check: nothing to tell
    assert message.title == f"RepoVault: {repo.repo_id} does not restore (tree_missing_object)"
    assert "tree/src/x.py" in message.message and f"run: {check_run}" in message.message
