"""Every hostile spelling of a URL with a password, through every way in: `repovault submit` as
a subprocess from another folder (its stderr), `POST /api/requests` over HTTP (the 400's reason
per URL, the unknown-fields echo, FastAPI's own validation echo), and a `pendientes` message
through a real injector tick (the `rechazados` records, keys included, and the rows in
PostgreSQL). The password, or a piece of it left by a cut, must come out of none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance
from sqlalchemy import create_engine, text

from tests.sensors.conftest import instance  # noqa: F401  (a Dagster instance, topics made)
from tests.support.injector import injector_tick as tick
from tests.support.kafka import produce, read_all
from tests.test_api import post

PASSWORD = "S3cretPassw0rdXYZ"
PIECE = PASSWORD[:5]  # what a cut through the password would leave

# (URL, what the masked text still shows)
FORMS = [
    (f"https://127.0.0.1/o/r.git?private%5Ftoken={PASSWORD}", "private_token=***"),
    (f"https://127.0.0.1/o/r.git?%70assword={PASSWORD}", "password=***"),
    (f"https://127.0.0.1/o/r.git?private%255Ftoken={PASSWORD}", "private_token=***"),
    (f"git@127.0.0.1:o/demo.git?private_token={PASSWORD}", "private_token=***"),
    (f"git@127.0.0.1:o/demo.git;private_token={PASSWORD}", "private_token=***"),
    (f"git@127.0.0.1:o/demo.git;%70rivate_token={PASSWORD}", "private_token=***"),
]
# Text long enough to be cut where the password stands: a row's `repo_url` is cut at 2,000
# characters, a dead letter's `original` at 4,096 bytes.
CUT_THROUGH = [
    "x" * (2000 - 20) + f" https://alice:{PASSWORD}@127.0.0.1/o/r.git",
    "y" * (4096 - 20) + f" https://alice:{PASSWORD}@127.0.0.1/o/r.git",
]


# The CLI prints the first refused URL through the same masking as the API: three forms, each
# a subprocess (seconds each), stand for all.
CLI_FORMS = [FORMS[0], FORMS[1], FORMS[4]]


@pytest.mark.parametrize(("url", "shown"), CLI_FORMS, ids=[u[24:44] for u, _ in CLI_FORMS])
def test_the_cli_names_the_refused_url_without_its_password(
    vault_env: dict[str, str], tmp_path: Path, url: str, shown: str
) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("repovault")), "submit", "--", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 2, done.stderr
    assert PIECE not in done.stdout + done.stderr
    assert shown in done.stderr and done.stderr.count("\n") == 1


def test_the_api_names_each_refused_url_without_its_password(
    api: str, http: requests.Session
) -> None:
    answer = post(http, api, json.dumps({"urls": [u for u, _ in FORMS]}))
    assert answer.status_code == 400
    refused = answer.json()["refused"]
    assert len(refused) == len(FORMS)
    for item, (_, shown) in zip(refused, FORMS, strict=True):
        assert shown in item["url"] + item["reason"], item
    # an unknown field named like a parameter, and FastAPI's own echo of a bad query value
    unknown = post(http, api, json.dumps({"urls": [FORMS[0][0]], f"password={PASSWORD}": 1}))
    assert unknown.status_code == 400 and "password=***" in unknown.json()["error"]
    echoed = http.get(f"{api}/api/requests", params={"limit": f"x?token={PASSWORD}"}, timeout=30)
    assert echoed.status_code in (400, 422)
    for body in (answer.text, unknown.text, echoed.text):
        assert PIECE not in body


def test_a_pendientes_message_leaves_no_password_in_rechazados_or_rows(
    instance: DagsterInstance,  # noqa: F811
    vault_env: dict[str, str],
    private_lineage: str,
) -> None:
    values = [u for u, _ in FORMS] + CUT_THROUGH
    produce(
        vault_env["REPOVAULT_TOPIC_PENDING"], [v.encode() for v in values], key=values[0].encode()
    )

    tick(instance)

    letters = read_all(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert len(letters) == len(values)
    published = "".join((r.key or b"").decode() + r.value.decode() for r in letters)
    engine = create_engine(private_lineage)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM repo_requests"))]
    engine.dispose()
    assert len(rows) == len(values) and {r["status"] for r in rows} == {"rejected"}
    stored = json.dumps(rows, default=str)
    assert PIECE not in published and PIECE not in stored
    originals = [json.loads(r.value)["original"] for r in letters]
    assert any(o.endswith("https://***@127.0.0.1/o/r.git") for o in originals)
    assert any(len(o.encode()) == 4096 and "https://***@" in o for o in originals)
    assert "private_token=***" in published and "private_token=***" in stored
