"""Dagster resources: thin handles on the core, configured from the environment at run time."""

import logging
from functools import lru_cache

from dagster import ConfigurableResource

from .core.fleet import FleetStore
from .core.kafka import KafkaGateway
from .core.lineage import LineageStore
from .core.settings import Settings
from .core.snapshot import SnapshotWriter
from .core.store import ObjectStore, open_store


class VaultResource(ConfigurableResource):
    """Object store and snapshot writer (REPOVAULT_S3_ENDPOINT, REPOVAULT_LOCAL_STORE, ...)."""

    def settings(self) -> Settings:
        return Settings.from_env()

    def store(self) -> ObjectStore:
        return open_store(self.settings())

    def writer(self, logger: logging.Logger) -> SnapshotWriter:
        settings = self.settings()
        return SnapshotWriter(settings, open_store(settings), logger)


class LineageResource(ConfigurableResource):
    """The `repo_requests` table at REPOVAULT_DB_URL (or `db_url` when configured)."""

    db_url: str | None = None

    def store(self) -> LineageStore:
        return lineage_store(self.db_url or Settings.from_env().db_url)

    def fleet(self) -> FleetStore:
        """`repo_sources` and `repo_state`, on the same database."""
        return FleetStore(self.store().engine)


@lru_cache(maxsize=8)
def lineage_store(db_url: str) -> LineageStore:
    """One engine (and one table check) per database per process."""
    store = LineageStore(db_url)
    store.create_tables()
    return store


class KafkaResource(ConfigurableResource):
    """The broker at REPOVAULT_KAFKA_BOOTSTRAP and the REPOVAULT_TOPIC_* topics."""

    def settings(self) -> Settings:
        return Settings.from_env()

    def gateway(self) -> KafkaGateway:
        return KafkaGateway(self.settings())

    def publish_status(self, topic: str, key: str, event: bytes, logger: logging.Logger) -> None:
        """Best effort (see `KafkaGateway.publish_status`)."""
        gateway = self.gateway()
        try:
            gateway.publish_status(topic, key, event, logger)
        finally:
            gateway.close()
