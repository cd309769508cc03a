"""`repovault serve` over HTTP on loopback: a real uvicorn server in its own process, talking to
the broker, PostgreSQL and the S3 server. Submissions reach `pendientes`; every bad body gets a
4xx with a reason and changes nothing; the OpenAPI document loads; /metrics parses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import requests
from dagster import DagsterInstance, SensorResult, instance_for_test
from prometheus_client.parser import text_string_to_metric_families

from repovault_pipeline.assets import restorable
from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.runs import TAG_FORCE, TAG_KEEP, TAG_REQUEST_ID, TAG_VERIFY_ID
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.sources.forges import forge_of
from repovault_pipeline.core.sources.metadata.archive import MetadataArchiver
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from repovault_pipeline.resources import LineageResource
from repovault_pipeline.sensors import verify_sensor
from tests.sensors.test_kafka_injector import drain
from tests.support.api import make_token, serve_command, session
from tests.support.daemon import daemon_tick_context
from tests.support.forge_metadata import FakeGitHub
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.servers import serving
from tests.support.tcp_proxy import BreakableProxy

CHECK = restorable.check_key


def post(http: requests.Session, api: str, body: bytes | str, **headers: str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return http.post(
        f"{api}/api/requests",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def rows() -> list:
    # a refused body may leave the database untouched, tables and all: open_lineage makes them
    return open_lineage(os.environ["REPOVAULT_DB_URL"]).find(limit=1000)


def test_submit_reaches_pendientes_and_is_readable(
    api: str, http: requests.Session, make_repo: Callable[..., ServedRepo]
) -> None:
    one, two = make_repo("one"), make_repo("two")
    # `keep` is checked as `repovault submit --[no-]lfs ...` and `pendientes` check it
    for keep, reason in [
        ({"lfs": "no"}, "keep.lfs must be true or false"),
        ({"tree": True}, "keep has unknown 'tree'; keys: lfs, wiki, metadata"),
        (["lfs"], "keep must be an object"),
    ]:
        refused = post(http, api, json.dumps({"urls": [one.url], "keep": keep}))
        assert refused.status_code == 400 and reason in refused.json()["error"], refused.text
    assert rows() == [] and read_json(os.environ["REPOVAULT_TOPIC_PENDING"]) == []

    answer = post(http, api, json.dumps({"urls": [one.url, two.url], "keep": {"lfs": False}}))
    assert answer.status_code == 202, answer.text
    made = answer.json()["requests"]
    assert [r["repo_url"] for r in made] == [one.url, two.url]
    assert answer.json()["keep"] == {"lfs": False}

    messages = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert sorted(m["request_id"] for m in messages) == sorted(r["request_id"] for r in made)
    assert {m["source"] for m in messages} == {"api"}
    assert [m["keep"] for m in messages] == [{"lfs": False}] * 2  # what the runs are told

    got = http.get(f"{api}/api/requests/{made[0]['request_id']}", timeout=10).json()
    assert (got["status"], got["source"], got["repo_url"]) == ("pending", "api", one.url)
    listed = http.get(
        f"{api}/api/requests", params={"status": "pending", "repo": two.url}, timeout=10
    ).json()
    assert [r["request_id"] for r in listed["requests"]] == [made[1]["request_id"]]
    page = http.get(f"{api}/api/requests", params={"limit": 1, "offset": 1}, timeout=10)
    assert len(page.json()["requests"]) == 1
    assert http.get(f"{api}/api/requests/nope", timeout=10).status_code == 404
    bad_status = http.get(f"{api}/api/requests", params={"status": "done"}, timeout=10)
    assert bad_status.status_code == 400 and "not one of" in bad_status.json()["error"]

    metrics = http.get(f"{api}/metrics", timeout=30)
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    pending = {s.labels["status"]: s.value for s in families["repovault_requests"].samples}
    assert pending["pending"] == 2 and pending["failed"] == 0
    assert "repovault_stored_bytes" in families
    assert "repovault_oldest_check_age_hours" in families
    stats = http.get(f"{api}/api/stats", timeout=30).json()
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
        ('{"urls": ["http://127.0.0.1/o/r.git"], "force": "yes"}', 400, '"force" must be'),
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
        "force-not-boolean",
        "10000-urls",
        "10MB",
        "one-bad-url",
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(
    api: str, http: requests.Session, body: str | bytes, status: int, reason: str
) -> None:
    answer = post(http, api, body)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["error"]
    assert rows() == []
    assert read_json(os.environ["REPOVAULT_TOPIC_PENDING"]) == []


def test_force_reaches_pendientes_and_the_run_tag(
    private_api: str, private_http: requests.Session, make_repo: Callable[..., ServedRepo]
) -> None:
    """`"force": true` travels in the `pendientes` message to the injector's run request."""
    api, http = private_api, private_http  # the injector drains `pendientes`
    KafkaGateway(Settings.from_env()).ensure_topics()
    repo = make_repo("forced")
    answer = post(http, api, json.dumps({"urls": [repo.url], "force": True}))
    assert answer.status_code == 202, answer.text
    [made] = answer.json()["requests"]
    [message] = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert (message["request_id"], message["force"]) == (made["request_id"], True)
    with instance_for_test() as instance:
        [run_request], _, _ = drain(instance)
    assert run_request.tags[TAG_REQUEST_ID] == made["request_id"]
    assert run_request.tags[TAG_FORCE] == "true"


def test_a_refused_url_is_named_with_its_reason(api: str, http: requests.Session) -> None:
    answer = post(http, api, json.dumps({"urls": ["https://u:secret@127.0.0.1/o/r.git", "-x"]}))
    assert answer.status_code == 400
    refused = answer.json()["refused"]
    assert [r["index"] for r in refused] == [0, 1]
    assert "GITHUB_TOKEN" in refused[0]["reason"] and "secret" not in answer.text


def test_openapi_document_and_docs(api: str, http: requests.Session) -> None:
    doc = http.get(f"{api}/api/openapi.json", timeout=10).json()
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
    assert "lfs, wiki, metadata" in body["schema"]["properties"]["keep"]["description"]
    assert http.get(f"{api}/healthz", timeout=10).json() == {"status": "ok"}

    # /api/docs works without internet: its script, stylesheet and icon come from the API
    # (Swagger UI 5, which renders the OpenAPI 3.1 document), no other host is named, and the
    # OAuth2 redirect it announces is served under /api.
    page = http.get(f"{api}/api/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "favicon.png",
    }
    assert "//" not in page.text  # no URL of another host: no CDN
    fetched = {a: http.get(f"{api}{a}", timeout=10) for a in assets if a.startswith("/api/")}
    assert set(fetched) == set(assets)
    assert all(r.status_code == 200 for r in fetched.values())
    [js] = [r for a, r in fetched.items() if a.endswith(".js")]
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    assert doc["openapi"] == "3.1.0"
    assert "isOAS31" in js.text  # Swagger UI 4 shows "Unable to render this definition"
    assert "url: '/api/openapi.json'" in page.text
    [redirect] = re.findall(r"oauth2RedirectUrl: window.location.origin \+ '([^']+)'", page.text)
    assert redirect == "/api/docs/oauth2-redirect"
    served = http.get(f"{api}{redirect}", timeout=10)
    assert served.status_code == 200 and "swaggerUIRedirectOauth2" in served.text


def test_repositories_snapshots_and_verify(api: str, http: requests.Session, archived) -> None:
    _, result = archived
    repos = http.get(f"{api}/api/repositories", timeout=30).json()["repositories"]
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
    snaps = http.get(f"{api}/api/repositories/{result.repo_id}/snapshots", timeout=30).json()
    assert snaps["latest"] == result.snapshot_id
    assert [s["snapshot_id"] for s in snaps["snapshots"]] == [result.snapshot_id]
    missing = http.get(f"{api}/api/repositories/127.0.0.1/x/y/snapshots", timeout=30)
    assert missing.status_code == 404

    with instance_for_test() as instance:
        instance.add_dynamic_partitions(repositories.name, [result.repo_id])
        passed = verify_over_http(http, api, instance, result.repo_id)
        assert passed["status"] == "passed" and passed["verdict"]["ok"] is True
        assert passed["verdict"]["snapshot_id"] == result.snapshot_id

        s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
        s3.delete_object(Bucket=result.bucket, Key="tree/a.txt")
        failed = verify_over_http(http, api, instance, result.repo_id)
    assert failed["status"] == "failed" and failed["verify_id"] != passed["verify_id"]
    assert failed["verdict"]["reason"] == "tree_missing_object"
    assert "tree/a.txt" in failed["verdict"]["summary"]


def verify_over_http(
    http: requests.Session, api: str, instance: DagsterInstance, repo_id: str
) -> dict:
    """POST .../verify twice (one check), a daemon tick of `verify_sensor` (its run request),
    the check's run, then the check as GET shows it."""
    started = http.post(f"{api}/api/repositories/{repo_id}/verify", timeout=30)
    assert started.status_code == 202, started.text
    check = started.json()
    assert (check["status"], check["new"]) == ("queued", True)
    assert started.headers["Location"] == check["url"] == f"/api/verifications/{check['verify_id']}"
    again = http.post(f"{api}/api/repositories/{repo_id}/verify", timeout=30).json()
    assert (again["verify_id"], again["new"]) == (check["verify_id"], False)

    with daemon_tick_context(
        instance, "verify_sensor", resources={"lineage": LineageResource()}
    ) as context:
        result = verify_sensor(context)
    assert isinstance(result, SensorResult)
    [run_request] = result.run_requests
    assert run_request.asset_selection == [] and run_request.asset_check_keys == [CHECK]
    assert (run_request.partition_key, run_request.tags[TAG_VERIFY_ID]) == (
        repo_id,
        check["verify_id"],
    )
    assert http.get(f"{api}{check['url']}", timeout=30).json()["status"] == "running"
    run = (
        defs.resolve_job_def("archive_repo_job")
        .get_subset(asset_selection=set(), asset_check_selection={CHECK})
        .execute_in_process(
            partition_key=repo_id, instance=instance, tags=run_request.tags, raise_on_error=False
        )
    )
    assert run.success
    done = http.get(f"{api}{check['url']}", timeout=30).json()
    assert done["run_id"] == run.run_id and done["finished_at"]
    return done


def test_a_request_through_the_api_reaches_the_injector_and_a_run(
    private_api: str, private_http: requests.Session, make_repo: Callable[..., ServedRepo]
) -> None:
    """POST → `pendientes` → the injector's run request → the archive run → the request's row
    `completed` and its `restorable` check passed, read back through the API."""
    api, http = private_api, private_http  # the injector drains `pendientes`
    KafkaGateway(Settings.from_env()).ensure_topics()
    repo = make_repo("through-api")
    repo.commit({"README.md": "hi\n"})
    repo.push()
    answer = post(http, api, json.dumps({"urls": [repo.url], "keep": {"wiki": False}}))
    assert answer.status_code == 202, answer.text
    [made] = answer.json()["requests"]
    with instance_for_test() as instance:
        requests_made, _, _ = drain(instance)
        [run_request] = requests_made
        assert run_request.tags[TAG_REQUEST_ID] == made["request_id"]
        assert run_request.tags[TAG_KEEP] == '{"wiki": false}'  # the request's own choice
        instance.add_dynamic_partitions(repositories.name, [run_request.partition_key])
        result = defs.resolve_job_def("archive_repo_job").execute_in_process(
            partition_key=run_request.partition_key, instance=instance, tags=run_request.tags
        )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    got = http.get(f"{api}/api/requests/{made['request_id']}", timeout=10).json()
    assert (got["status"], got["source"], got["run_id"]) == ("completed", "api", result.run_id)
    started = http.post(f"{api}/api/repositories/{made['repo_id']}/verify", timeout=30)
    assert started.status_code == 202 and started.json()["repo_id"] == made["repo_id"]


def test_snapshots_of_code_wiki_and_metadata_over_http_and_cli(
    api: str,
    http: requests.Session,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ids `restore --snapshot` takes, whatever was kept: `repovault snapshots` (from a
    folder of its own) and the API list the same code, wiki and metadata snapshots, newest
    first, the latest marked; a listed wiki id restores."""
    owner = f"owner{uuid.uuid4().hex[:8]}"
    repo, wiki = make_repo("handbook", owner=owner), make_repo("handbook.wiki", owner=owner)
    repo.commit({"README.md": "hi\n"})
    repo.push()
    wiki.commit({"Home.md": "# Home\n"})
    wiki.push()
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    store = open_store(settings)
    first = SnapshotWriter(settings, store).archive(ref)
    repo.commit({"b.txt": "b\n"})
    repo.push()
    second = SnapshotWriter(settings, store).archive(ref)
    forge = FakeGitHub(owner, "handbook")
    forge.add_issue("the first issue")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    try:
        forge_settings = Settings.from_env()
        found_forge = forge_of(ref, forge_settings)
        assert found_forge is not None
        meta = MetadataArchiver(forge_settings, store).archive(ref, found_forge)
    finally:
        forge.close()
    wiki_id = first.wiki_snapshot_id
    assert wiki_id and second.wiki_snapshot_id == wiki_id and meta.snapshot_id

    listed = http.get(f"{api}/api/repositories/{ref.repo_id}/snapshots", timeout=30).json()
    assert listed["latest"] == second.snapshot_id
    assert [s["snapshot_id"] for s in listed["snapshots"]] == [
        second.snapshot_id,
        first.snapshot_id,
    ]
    assert listed["snapshots"][0]["head_commit"] == repo.head()
    # The second bundle holds what is new since the first (its base); the first is full.
    assert [s["base"] for s in listed["snapshots"]] == [first.snapshot_id, ""]
    assert listed["wiki"]["latest"] == wiki_id
    assert [(s["snapshot_id"], s["head_commit"]) for s in listed["wiki"]["snapshots"]] == [
        (wiki_id, wiki.head())
    ]
    assert listed["metadata"]["latest"] == meta.snapshot_id
    [meta_listed] = listed["metadata"]["snapshots"]
    assert meta_listed["records"]["issues"] == 1 and meta_listed["bytes"] > 0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("repovault")), "snapshots", repo.url],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [re.split(r"\s{2,}", line) for line in done.stdout.splitlines()]
    header = ["kind", "snapshot_id", "created", "head", "size", "latest", "contents", "base"]
    assert lines[0] == [*header, "kept"]
    assert [(c[0], c[1], c[3], c[5], c[7], c[8]) for c in lines[1:]] == [
        ("code", second.snapshot_id, repo.head()[:12], "yes", first.snapshot_id, "last"),
        ("code", first.snapshot_id, first.head_commit[:12], "-", "-", "last"),
        ("wiki", wiki_id, wiki.head()[:12], "yes", "-", "last"),
        ("metadata", meta.snapshot_id, "-", "yes", "-", "always"),
    ]
    assert lines[4][6].startswith("1 issues") and "--wiki" in done.stderr
    assert list(elsewhere.iterdir()) == []

    dest = tmp_path / "wiki"
    assert cli(["restore", "--wiki", "--snapshot", wiki_id, ref.repo_id, str(dest)]) == 0
    assert (dest / "Home.md").read_text() == "# Home\n"
    assert cli(["snapshots", f"127.0.0.1/{owner}/never"]) == 1
    assert "no snapshot of" in capsys.readouterr().err


def test_stores_that_never_answer_are_a_503_naming_them(
    vault_env: dict[str, str], private_lineage: str, tmp_path: Path
) -> None:
    """Issue 20, item 4 over HTTP: a PostgreSQL and an S3 that accept connections and never
    answer give a 503 with the CLI's line, in bounded time, not a hung request or a 500. The
    token is checked in the database first: each store is broken under a server of its own."""
    db, s3 = BreakableProxy.black_hole(), BreakableProxy.black_hole()
    no_db = {
        "REPOVAULT_DB_URL": f"postgresql+psycopg2://repovault@127.0.0.1:{db.port}/x",
        "REPOVAULT_DB_TIMEOUT_S": "1",
    }
    no_s3 = {"REPOVAULT_S3_ENDPOINT": s3.endpoint, "REPOVAULT_S3_TIMEOUT_S": "1"}
    with session(make_token("read")) as http:
        with serving(serve_command, tmp_path / "api-db.log", no_db) as port:
            listed = http.get(f"http://127.0.0.1:{port}/api/requests", timeout=60)
        with serving(serve_command, tmp_path / "api-s3.log", no_s3) as port:
            repos = http.get(f"http://127.0.0.1:{port}/api/repositories", timeout=60)
    db.close()
    s3.close()
    assert db.held and s3.held
    assert listed.status_code == 503, listed.text
    assert "cannot reach the lineage database at" in listed.json()["error"]
    assert "REPOVAULT_DB_TIMEOUT_S=1s" in listed.json()["error"]
    assert repos.status_code == 503, repos.text
    assert f"cannot reach the object store at {s3.endpoint}" in repos.json()["error"]
    assert "REPOVAULT_S3_TIMEOUT_S=1s" in repos.json()["error"]
