"""What a request keeps (`keep` in the `pendientes` message, `repovault submit --no-lfs`):
through the real broker, the injector sensor's run request tags, and an archive run against the
git and S3 servers, to the run's metadata and the manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import boto3
import pytest
from dagster import DagsterInstance

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.settings import Keep, Settings
from repovault_pipeline.core.intake.messages import RejectedMessage, parse_request
from repovault_pipeline.core.intake.runs import TAG_KEEP, request_of_run
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.support.injector import injector_tick as tick
from tests.support.kafka import produce, read_json
from tests.support.repos import ServedRepo


@pytest.mark.parametrize(
    ("keep", "reason"),
    [
        ("no", "keep must be an object"),
        ({"issues": True}, "unknown 'issues'"),
        ({"lfs": "no"}, "keep.lfs must be true or false"),
    ],
)
def test_an_unusable_keep_is_rejected_with_its_reason(keep: object, reason: str) -> None:
    settings = Settings.from_env({"REPOVAULT_ALLOWED_HOSTS": "github.com"})
    message = json.dumps({"repo_url": "https://github.com/o/r", "keep": keep}).encode()
    with pytest.raises(RejectedMessage, match=reason):
        parse_request(message, "rid", settings)
    plain = parse_request(b'{"repo_url": "https://github.com/o/r"}', "rid", settings)
    assert plain.keep == {}


def test_submit_no_lfs_reaches_the_run_and_its_metadata(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("selective")
    repo.track_lfs("*.bin")
    repo.commit({"w.bin": os.urandom(3000)})
    repo.push()
    assert cli(["submit", "--no-lfs", repo.url]) == 0, capsys.readouterr().err
    [message] = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert message["keep"] == {"lfs": False}

    result = tick(instance)
    [run_request] = result.run_requests
    assert json.loads(run_request.tags[TAG_KEEP]) == {"lfs": False}

    repo_id = run_request.partition_key
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    job = defs.resolve_job_def("archive_repo_job")
    run = job.execute_in_process(
        partition_key=repo_id, instance=instance, tags=run_request.tags, raise_on_error=False
    )
    assert run.success
    [materialization] = run.asset_materializations_for_node("repo_archive")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["keep"] == "lfs=no, wiki=yes"
    assert meta["lfs_objects"] == 0 and meta["wiki_outcome"] == "absent"
    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    bucket = meta["bucket"].rstrip("/").rsplit("/", 1)[-1]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="lfs/")
    key = f"snapshots/{meta['snapshot_id']}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["keep"] == {"lfs": False, "wiki": True} and manifest["lfs"] is None


def test_a_message_keeping_lfs_overrides_the_setting(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo], monkeypatch
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_LFS", "false")
    repo = make_repo("chosen")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    value = json.dumps({"repo_url": repo.url, "keep": {"lfs": True, "wiki": False}})
    produce(os.environ["REPOVAULT_TOPIC_PENDING"], [value.encode()])
    [run_request] = tick(instance).run_requests
    assert json.loads(run_request.tags[TAG_KEEP]) == {"lfs": True, "wiki": False}
    request = request_of_run(run_request.tags, "run")
    assert request.keep_for(Settings.from_env()) == Keep(lfs=True, wiki=False)
    no_choice = request_of_run({}, "run")
    assert no_choice.keep_for(Settings.from_env()) == Keep(lfs=False, wiki=True)


def test_an_edited_keep_tag_fails_the_run_with_its_reason() -> None:
    request = request_of_run({TAG_KEEP: '{"lfs": 1}'}, "run")
    with pytest.raises(ArchiveError, match=r"repovault/keep.*keep\.lfs must be true or false"):
        request.keep_for(Settings.from_env({}))
