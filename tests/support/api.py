"""`repovault serve` for the API tests: the command, tokens made in the test's database, and a
server shared by the tests of a module that need no configuration of their own."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
from kafka import KafkaAdminClient

from repovault_pipeline.core.access.tokens import TokenStore
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.lineage.tables import metadata

# What a test shares with the server it talks to: the lineage database, the topics, the buckets.
SHARED_KEYS = (
    "REPOVAULT_DB_URL",
    "REPOVAULT_TOPIC_PENDING",
    "REPOVAULT_TOPIC_IN_PROGRESS",
    "REPOVAULT_TOPIC_COMPLETED",
    "REPOVAULT_TOPIC_REJECTED",
    "REPOVAULT_BUCKET_PREFIX",
)
TOPICS = SHARED_KEYS[1:5]


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "repovault_pipeline.cli", "serve", "--port", str(port)]


def make_token(scope: str = "admin", name: str | None = "tests") -> str:
    """A new API token in the lineage database of REPOVAULT_DB_URL."""
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    try:
        return TokenStore(lineage.engine).create(scope, name)[1]
    finally:
        lineage.dispose()


def session(token: str) -> requests.Session:
    """HTTP calls carrying `Authorization: Bearer <token>`."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


@dataclass(frozen=True)
class SharedApi:
    """A `repovault serve` several tests talk to in turn (one per module and xdist worker): each
    test starts from what a server of its own would show, `empty()`."""

    url: str
    env: dict[str, str]  # the server's environment: SHARED_KEYS and the services
    log: Path

    def empty(self) -> None:
        """No lineage row, token or check; no bucket under the prefix; none of the topics."""
        lineage = open_lineage(self.env["REPOVAULT_DB_URL"])  # its tables made, if not yet
        try:
            with lineage.engine.begin() as conn:
                names = ", ".join(t.name for t in metadata.sorted_tables)
                conn.exec_driver_sql(f"TRUNCATE {names}")
        finally:
            lineage.dispose()
        self._drop_buckets()
        self._drop_topics()

    def _drop_buckets(self) -> None:
        s3 = boto3.client(
            "s3",
            endpoint_url=self.env["REPOVAULT_S3_ENDPOINT"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        )
        prefix = self.env["REPOVAULT_BUCKET_PREFIX"]
        for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            if not bucket.startswith(prefix):
                continue
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                versions = page.get("Versions", []) + page.get("DeleteMarkers", [])
                if versions:
                    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
            s3.delete_bucket(Bucket=bucket)

    def _drop_topics(self) -> None:
        """Deleted, not emptied: what the server publishes next creates them afresh, as for a
        server of the test's own; waits until the broker no longer lists them."""
        admin = KafkaAdminClient(bootstrap_servers=self.env["REPOVAULT_KAFKA_BOOTSTRAP"])
        try:
            topics = {self.env[key] for key in TOPICS}
            if present := topics & set(admin.list_topics()):
                admin.delete_topics(sorted(present))
            deadline = time.monotonic() + 30
            while present := topics & set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the broker still lists {sorted(present)}")
                time.sleep(0.05)
        finally:
            admin.close()
