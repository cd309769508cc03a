"""Dagster resources: thin handles on the core, carrying the connection settings they use.

Each resource's fields are the variables of docs/contract.md that its connection depends on,
set in `definitions.py` from `EnvVar`s, so the UI's resource page shows them. A field left None
takes the environment's value (else the default of `core.settings.Settings`). The settings,
store, lineage engine and Kafka producer are built once when a run, sensor tick or schedule
tick initializes the resource (`setup_for_execution`), and closed when it ends.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from dagster import ConfigurableResource, InitResourceContext
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from .core.common.settings import Settings
from .core.intake.kafka import KafkaGateway
from .core.lineage.requests import LineageStore, open_lineage
from .core.sources.fleet import FleetStore
from .core.vault.s3 import s3_client_config
from .core.vault.snapshot import SnapshotWriter
from .core.vault.store import ObjectStore, open_store


class _SettingsResource(ConfigurableResource):
    """A resource whose fields override the environment's settings of the same variables."""

    _settings: Settings | None = PrivateAttr(default=None)

    def _overrides(self) -> dict[str, str | None]:
        return {}

    def settings(self) -> Settings:
        """The run's (or tick's) settings, read once."""
        if self._settings is None:
            self._settings = Settings.from_env(overrides=self._overrides())
        return self._settings

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.settings()


class VaultS3Resource(S3Resource):
    """dagster-aws's S3 resource (endpoint REPOVAULT_S3_ENDPOINT, region and credentials from
    AWS_*), with the client RepoVault needs: path-style addressing for MinIO, one connection
    per upload worker, bounded timeouts."""

    def get_client(self) -> Any:
        """The client `vault` uses, for code that asks dagster-aws's way (`s3.get_client()`)."""
        return self.client_for(
            Settings.from_env(overrides={"REPOVAULT_S3_ENDPOINT": self.endpoint_url})
        )

    def client_for(self, settings: Settings) -> Any:
        """A boto3 S3 client; unset fields take `settings` (endpoint, region) or boto3's own
        credential chain."""
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url or settings.s3_endpoint,
            region_name=self.region_name or settings.s3_region,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=s3_client_config(settings.upload_workers + 4, settings.s3_timeout_s),
        )


class VaultResource(_SettingsResource):
    """The object store: S3/MinIO through `s3`, or the local folder `local_store` when no S3
    endpoint is set; buckets are named `bucket_prefix` + repository."""

    s3: VaultS3Resource
    bucket_prefix: str | None = None
    local_store: str | None = None
    _store: ObjectStore | None = PrivateAttr(default=None)

    def _overrides(self) -> dict[str, str | None]:
        return {
            "REPOVAULT_S3_ENDPOINT": self.s3.endpoint_url,
            "REPOVAULT_BUCKET_PREFIX": self.bucket_prefix,
            "REPOVAULT_LOCAL_STORE": self.local_store,
        }

    def store(self) -> ObjectStore:
        """The run's store (one boto3 client per run: building one costs ~0.1 s)."""
        if self._store is None:
            settings = self.settings()
            client = self.s3.client_for(settings) if settings.s3_endpoint else None
            self._store = open_store(settings, client)
        return self._store

    def writer(self, logger: logging.Logger) -> SnapshotWriter:
        return SnapshotWriter(self.settings(), self.store(), logger)


class LineageResource(_SettingsResource):
    """The lineage tables (`repo_requests`, ...) at `db_url` (REPOVAULT_DB_URL)."""

    db_url: str | None = None
    _store: LineageStore | None = PrivateAttr(default=None)

    def _overrides(self) -> dict[str, str | None]:
        return {"REPOVAULT_DB_URL": self.db_url}

    def store(self) -> LineageStore:
        """One engine (and one table check) per run or tick."""
        if self._store is None:
            settings = self.settings()
            self._store = open_lineage(settings.db_url, settings.db_timeout_s)
        return self._store

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def fleet(self) -> FleetStore:
        """`repo_sources` and `repo_state`, on the same database."""
        return FleetStore(self.store().engine)


class KafkaResource(_SettingsResource):
    """The broker at `bootstrap` (REPOVAULT_KAFKA_BOOTSTRAP) and the four topics
    (REPOVAULT_TOPIC_*)."""

    bootstrap: str | None = None
    topic_pending: str | None = None
    topic_in_progress: str | None = None
    topic_completed: str | None = None
    topic_rejected: str | None = None
    _gateway: KafkaGateway | None = PrivateAttr(default=None)

    def _overrides(self) -> dict[str, str | None]:
        return {
            "REPOVAULT_KAFKA_BOOTSTRAP": self.bootstrap,
            "REPOVAULT_TOPIC_PENDING": self.topic_pending,
            "REPOVAULT_TOPIC_IN_PROGRESS": self.topic_in_progress,
            "REPOVAULT_TOPIC_COMPLETED": self.topic_completed,
            "REPOVAULT_TOPIC_REJECTED": self.topic_rejected,
        }

    def gateway(self) -> KafkaGateway:
        """The run's (or tick's) gateway: one producer for all its status events, closed when
        the run ends. Callers do not close it."""
        if self._gateway is None:
            self._gateway = KafkaGateway(self.settings())
        return self._gateway

    def publish_status(self, topic: str, key: str, event: bytes, logger: logging.Logger) -> None:
        """Best effort (see `KafkaGateway.publish_status`)."""
        self.gateway().publish_status(topic, key, event, logger)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None
