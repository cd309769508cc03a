"""`repovault serve` over HTTP on loopback: a real uvicorn server in its own process, talking to
the broker, PostgreSQL and the S3 server. Submissions reach `pendientes`; every bad body gets a
4xx with a reason and changes nothing; the OpenAPI document loads; /metrics parses."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import requests
from dagster import instance_for_test
from prometheus_client.parser import text_string_to_metric_families

from repovault_pipeline.core.kafka import KafkaGateway
from repovault_pipeline.core.lineage import open_lineage
from repovault_pipeline.core.runs import TAG_REQUEST_ID
from repovault_pipeline.core.settings import Settings
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.sensors.test_kafka_injector import drain
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.servers import serving


@pytest.fixture
def api(vault_env: dict[str, str], private_lineage: str, tmp_path: Path) -> Iterator[str]:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "repovault_pipeline.cli", "serve", "--port", str(port)]

    with serving(command, tmp_path / "api.log") as port:
        yield f"http://127.0.0.1:{port}"


def post(api: str, body: bytes | str, **headers: str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(
        f"{api}/api/requests",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def rows() -> list:
    # a refused body may leave the database untouched, tables and all: open_lineage makes them
    return open_lineage(os.environ["REPOVAULT_DB_URL"]).find(limit=1000)


def test_submit_reaches_pendientes_and_is_readable(
    api: str, make_repo: Callable[..., ServedRepo]
) -> None:
    one, two = make_repo("one"), make_repo("two")
    answer = post(api, json.dumps({"urls": [one.url, two.url]}))
    assert answer.status_code == 202, answer.text
    made = answer.json()["requests"]
    assert [r["repo_url"] for r in made] == [one.url, two.url]

    messages = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert sorted(m["request_id"] for m in messages) == sorted(r["request_id"] for r in made)
    assert {m["source"] for m in messages} == {"api"}

    got = requests.get(f"{api}/api/requests/{made[0]['request_id']}", timeout=10).json()
    assert (got["status"], got["source"], got["repo_url"]) == ("pending", "api", one.url)
    listed = requests.get(
        f"{api}/api/requests", params={"status": "pending", "repo": two.url}, timeout=10
    ).json()
    assert [r["request_id"] for r in listed["requests"]] == [made[1]["request_id"]]
    page = requests.get(f"{api}/api/requests", params={"limit": 1, "offset": 1}, timeout=10)
    assert len(page.json()["requests"]) == 1
    assert requests.get(f"{api}/api/requests/nope", timeout=10).status_code == 404
    bad_status = requests.get(f"{api}/api/requests", params={"status": "done"}, timeout=10)
    assert bad_status.status_code == 400 and "not one of" in bad_status.json()["detail"]

    metrics = requests.get(f"{api}/metrics", timeout=30)
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    pending = {s.labels["status"]: s.value for s in families["repovault_requests"].samples}
    assert pending["pending"] == 2 and pending["failed"] == 0
    assert "repovault_stored_bytes" in families
    assert "repovault_oldest_check_age_hours" in families
    stats = requests.get(f"{api}/api/stats", timeout=30).json()
    assert stats["figures"]["requests_source_api"] == 2


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ("not json", 400, "not JSON"),
        ("", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"urls": "http://127.0.0.1/o/r.git"}', 400, "list of URL strings"),
        ('{"urls": [1]}', 400, "urls[0] is not a string"),
        ('{"urls": []}', 400, "empty"),
        ('{"urls": ["http://127.0.0.1/o/r.git"], "extra": 1}', 400, "unknown fields"),
        (json.dumps({"urls": ["http://127.0.0.1/o/r.git"] * 10_000}), 413, "at most 1000"),
        (b"{" + b" " * (10 * 1024 * 1024) + b"}", 413, "bytes"),
        ('{"urls": ["http://127.0.0.1/o/r.git", "file:///etc/passwd"]}', 400, "1 of 2"),
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "string",
        "number",
        "no-urls",
        "extra-field",
        "10000-urls",
        "10MB",
        "one-bad-url",
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(
    api: str, body: str | bytes, status: int, reason: str
) -> None:
    answer = post(api, body)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["error"]
    assert rows() == []
    assert read_json(os.environ["REPOVAULT_TOPIC_PENDING"]) == []


def test_a_refused_url_is_named_with_its_reason(api: str) -> None:
    answer = post(api, json.dumps({"urls": ["https://u:secret@127.0.0.1/o/r.git", "-x"]}))
    assert answer.status_code == 400
    refused = answer.json()["refused"]
    assert [r["index"] for r in refused] == [0, 1]
    assert "GITHUB_TOKEN" in refused[0]["reason"] and "secret" not in answer.text


def test_openapi_document_and_docs(api: str) -> None:
    doc = requests.get(f"{api}/api/openapi.json", timeout=10).json()
    paths = set(doc["paths"])
    assert {
        "/api/requests",
        "/api/requests/{request_id}",
        "/api/repositories",
        "/api/repositories/{repo_id}/snapshots",
        "/api/repositories/{repo_id}/verify",
        "/api/stats",
        "/healthz",
        "/metrics",
    } <= paths
    body = doc["paths"]["/api/requests"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["urls"]["type"] == "array"
    page = requests.get(f"{api}/api/docs", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert requests.get(f"{api}/healthz", timeout=10).json() == {"status": "ok"}


def test_repositories_snapshots_and_verify(api: str, archived) -> None:
    _, result = archived
    repos = requests.get(f"{api}/api/repositories", timeout=30).json()["repositories"]
    assert [(r["repo_id"], r["snapshot_id"]) for r in repos] == [
        (result.repo_id, result.snapshot_id)
    ]
    sizes = {"bundles": result.bundle_size, "tree": result.tree_bytes}
    assert repos[0]["stored_bytes"] == {
        **sizes,
        "lfs": 0,
        "wiki": 0,
        "metadata": 0,
        "total": sum(sizes.values()),
    }
    snaps = requests.get(f"{api}/api/repositories/{result.repo_id}/snapshots", timeout=30).json()
    assert snaps["latest"] == result.snapshot_id
    assert [s["snapshot_id"] for s in snaps["snapshots"]] == [result.snapshot_id]
    missing = requests.get(f"{api}/api/repositories/127.0.0.1/x/y/snapshots", timeout=30)
    assert missing.status_code == 404

    ok = requests.post(f"{api}/api/repositories/{result.repo_id}/verify", timeout=60)
    assert ok.status_code == 200 and ok.json()["ok"] is True

    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    s3.delete_object(Bucket=result.bucket, Key="tree/a.txt")
    failed = requests.post(f"{api}/api/repositories/{result.repo_id}/verify", timeout=60)
    assert failed.status_code == 409 and failed.json()["reason"] == "tree_missing_object"


def test_a_request_through_the_api_reaches_the_injector_and_a_run(
    api: str, make_repo: Callable[..., ServedRepo]
) -> None:
    """POST → `pendientes` → the injector's run request → the archive run → the request's row
    `completed` and its `restorable` check passed, read back through the API."""
    KafkaGateway(Settings.from_env()).ensure_topics()
    repo = make_repo("through-api")
    repo.commit({"README.md": "hi\n"})
    repo.push()
    answer = post(api, json.dumps({"urls": [repo.url]}))
    assert answer.status_code == 202, answer.text
    [made] = answer.json()["requests"]
    with instance_for_test() as instance:
        requests_made, _, _ = drain(instance)
        [run_request] = requests_made
        assert run_request.tags[TAG_REQUEST_ID] == made["request_id"]
        instance.add_dynamic_partitions(repositories.name, [run_request.partition_key])
        result = defs.resolve_job_def("archive_repo_job").execute_in_process(
            partition_key=run_request.partition_key, instance=instance, tags=run_request.tags
        )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    got = requests.get(f"{api}/api/requests/{made['request_id']}", timeout=10).json()
    assert (got["status"], got["source"], got["run_id"]) == ("completed", "api", result.run_id)
    verdict = requests.post(f"{api}/api/repositories/{made['repo_id']}/verify", timeout=60)
    assert verdict.status_code == 200 and verdict.json()["snapshot_id"] == got["snapshot_id"]
