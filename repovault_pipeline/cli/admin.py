"""`repovault init`: the one setup command, apart because it is the only one that creates the
database schema and the Kafka topics every other command relies on."""

from __future__ import annotations

import argparse

from ..core.common.settings import Settings
from ..core.intake.kafka import KafkaGateway
from ..core.lineage.requests import LineageStore
from ..core.lineage.schema import upgrade
from .common import Subparsers, safe_url


def register(sub: Subparsers) -> None:
    sub.add_parser(
        "init",
        help="upgrade the lineage database to this version's schema, create topics (idempotent)",
    ).set_defaults(handler=cmd_init)


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the lineage database to the code's schema (or refuse a newer one), then create
    the missing topics; both safe to repeat."""
    lineage = LineageStore(settings.db_url, settings.db_timeout_s)
    try:
        done = upgrade(lineage.engine)
    finally:
        lineage.dispose()
    print(f"RepoVault home (REPOVAULT_HOME): {settings.home}")
    print(f"lineage database at {safe_url(settings.db_url)}: {done.line()}")
    gateway = KafkaGateway(settings)
    created = gateway.ensure_topics()
    topics = settings.topics
    print(
        f"topics {', '.join(topics.all())} ready at {settings.kafka_bootstrap} "
        f"({topics.partitions} partitions, replication {topics.replication_factor}; "
        f"created: {', '.join(created) or 'none'})"
    )
    return 0
