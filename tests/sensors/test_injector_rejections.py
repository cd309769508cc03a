"""Every reason the injector refuses a `pendientes` message, through a real tick against the
broker and PostgreSQL: the dead letter on `rechazados` names the reason, the lineage row is
`rejected` with it, and a credential in the message reaches neither."""

from __future__ import annotations

import json

from dagster import DagsterInstance

from repovault_pipeline.core.lineage.requests import open_lineage
from tests.support.injector import injector_tick as tick
from tests.support.kafka import dead_letters, produce, read_all

GOOD_URL = "http://127.0.0.1:9/owner/repo.git"
PASSWORD = "S3cretPassw0rd"
TOKEN = "glpat-" + "Vb8n" * 6


def spec(**fields: object) -> bytes:
    """A SPEC request with `fields` replacing (or, set to ..., removing) the valid defaults."""
    doc = {
        "request_id": "req-" + str(abs(hash(repr(fields))))[:10],
        "repo_url": GOOD_URL,
        "source": "kafka",
        "requested_at": "2026-01-02T03:04:05+00:00",
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


# (message value, a part of the reason the dead letter must give)
REJECTIONS = [
    (b"", "empty message"),
    (b"   \n", "empty message"),
    (b'""', "empty message"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b'{"repo_url": "http://127.0.0.1:9/x/y.git",', "malformed JSON"),
    (b"[1, 2]", "JSON array is not a request"),
    (b"42", "JSON number is not a request"),
    (b"-1.5e3", "JSON number is not a request"),
    (b"true", "JSON boolean is not a request"),
    (b"null", "JSON null is not a request"),
    (b"{}", "no repo_url string"),
    (spec(repo_url=...), "no repo_url string"),
    (spec(repo_url=None), "no repo_url string"),
    (spec(repo_url=["http://127.0.0.1:9/a/b.git"]), "no repo_url string"),
    (spec(repo_url=12), "no repo_url string"),
    (spec(request_id="has spaces"), "request_id must be 1-64"),
    (spec(request_id="x" * 65), "request_id must be 1-64"),
    (spec(request_id=17), "request_id must be 1-64"),
    (spec(request_id="a/b"), "request_id must be 1-64"),
    (spec(source="e mail"), "source 'e mail' is not a label"),
    (spec(source="x" * 17), "is not a label: give 1-16 letters"),
    (spec(source=["cli"]), "is not a label"),
    (spec(source=3), "source '3' is not a label"),
    (spec(requested_at="yesterday"), "requested_at is not an ISO 8601 timestamp"),
    (spec(requested_at=1700000000), "requested_at is not an ISO 8601 timestamp"),
    (spec(requested_at={"at": 1}), "requested_at is not an ISO 8601 timestamp"),
    (spec(repo_url="file:///etc/passwd"), "local paths"),
    (spec(repo_url="ext::sh -c id"), "transport helpers"),
    (spec(repo_url="ftp://127.0.0.1/a/b"), "scheme 'ftp' is not allowed"),
    (spec(repo_url="https://evil.example.com/a/b"), "host 'evil.example.com' is not allowed"),
    (spec(repo_url="http://127.0.0.1:9/a/../b"), "'..'"),
    (b"--upload-pack=touch /tmp/x", "starts with '-'"),
    (b"owner-only", "is not a repository URL"),
]

# The two forms of issue 10 that printed a password, as bare values and inside SPEC JSON.
SECRET_URLS = [
    f"user:{PASSWORD}@127.0.0.1:pallets/flask.git",
    f"https://127.0.0.1/pallets/flask.git?private_token={PASSWORD}",
    f"https://oauth2:{TOKEN}@127.0.0.1/pallets/flask.git",
]


def test_each_field_rejection_reaches_rechazados_and_lineage_with_its_reason(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    produce(topic, [value for value, _ in REJECTIONS] + [GOOD_URL.encode()], key=b"k")

    result = tick(instance)

    assert [r.partition_key for r in result.run_requests] == ["127.0.0.1:9/owner/repo"]
    dead = dead_letters(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert [d["offset"] for d in dead] == sorted(d["offset"] for d in dead)
    assert len(dead) == len(REJECTIONS)
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    for letter, (value, reason) in zip(dead, REJECTIONS, strict=True):
        assert reason in letter["reason"], (value, letter["reason"])
        assert "\n" not in letter["reason"]
        assert letter["original"] == value.decode("utf-8", "backslashreplace")
        assert letter["topic"] == topic
        row = lineage.get(letter["request_id"])
        assert row is not None and row.status == "rejected", value
        assert row.error == letter["reason"]


def test_a_password_in_a_message_reaches_no_dead_letter_row_or_run(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    values = [url.encode() for url in SECRET_URLS] + [
        spec(request_id=f"secret-{i}", repo_url=url) for i, url in enumerate(SECRET_URLS)
    ]
    produce(topic, values, key=SECRET_URLS[0].encode())  # a careless producer keys by URL

    result = tick(instance)

    assert result.run_requests == []
    raw_dead = read_all(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert len(raw_dead) == len(values)
    dead = [json.loads(r.value) for r in raw_dead]
    assert all("credentials" in d["reason"] or "query strings" in d["reason"] for d in dead), dead
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    rows = [lineage.get(d["request_id"]) for d in dead]
    assert [r.status for r in rows] == ["rejected"] * len(values)
    assert {r.request_id for r in rows} >= {f"secret-{i}" for i in range(len(SECRET_URLS))}
    written = "".join(
        [r.value.decode() + (r.key or b"").decode() for r in raw_dead]
        + [f"{r.repo_url} {r.error}" for r in rows]
    )
    for secret in (PASSWORD, TOKEN):
        assert secret not in written
    # What is left still says what was refused.
    assert "127.0.0.1:pallets/flask.git" in written and "private_token=***" in written
