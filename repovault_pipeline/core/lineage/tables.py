"""The RepoVault database (docs/contract.md, "Tables"): `repo_requests` (one row per request),
`repo_sources` (tracked organisations and groups) and `repo_state` (one row per known
repository: what upstream looked like when last checked).

Table definitions only, so every store (lineage, fleet, statistics) queries one schema. The
database gets them from the migrations (migrations/versions/, applied by schema.py):
a change here needs a new revision there, and tests/core/test_migrations.py fails until the
head revision's tables equal these. Timestamps are timezone-aware UTC on PostgreSQL and SQLite.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

SOURCES = ("cli", "api", "trending", "kafka", "backfill", "ui", "track", "refresh")
# What `repo_requests.source` holds: RepoVault's own SOURCES, or a third party's label on a
# `pendientes` message (`crm`), kept as given; at most 16 characters (the column's width).
SOURCE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}\Z")
UPSTREAM_STATES = ("active", "unreachable", "gone")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the lineage store; use UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()
repo_requests = Table(
    "repo_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("repo_url", Text, nullable=False),
    Column("repo_id", String(512)),
    Column("source", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("creation_timestamp", UTCDateTime, nullable=False),
    Column("inyector_timestamp", UTCDateTime),
    Column("worker_start_timestamp", UTCDateTime),
    Column("worker_finishing_timestamp", UTCDateTime),
    Column("run_id", String(64)),
    Column("snapshot_id", String(64)),
    Column("head_commit", String(64)),
    Column("bytes_uploaded", BigInteger),
    Column("error", Text),
    Column("reasons", Text),  # JSON of a `partial` request: reason name -> one-line detail
    Column("keep", Text),  # JSON: the request's own choice of extras; NULL: the defaults
    Column("force", Boolean),  # a fresh full snapshot even if nothing changed; NULL: not forced
    Index("ix_repo_requests_repo_id", "repo_id"),
    Index("ix_repo_requests_status", "status"),
    Index("ix_repo_requests_creation", "creation_timestamp"),
)


repo_sources = Table(
    "repo_sources",
    metadata,
    Column("source_id", String(600), primary_key=True),  # e.g. github-org:github.com/dagster-io
    Column("kind", String(16), nullable=False),  # github-org, github-user, gitlab-group
    Column("name", String(512), nullable=False),
    Column("host", String(255), nullable=False),
    Column("skip_forks", Boolean, nullable=False, default=False),
    Column("skip_archived", Boolean, nullable=False, default=False),
    Column("include", Text),  # name patterns (fnmatch), comma separated
    Column("exclude", Text),
    Column("keep", Text),  # JSON: what runs of its repositories keep (lfs, wiki, metadata)
    Column("added_at", UTCDateTime, nullable=False),
    Column("last_listed_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # active, error, removed
    Column("error", Text),
)
repo_state = Table(
    "repo_state",
    metadata,
    Column("repo_id", String(512), primary_key=True),
    Column("repo_url", Text, nullable=False),
    Column("source_id", String(600)),
    Column("last_checked_at", UTCDateTime),
    Column("last_changed_at", UTCDateTime),
    Column("refs_digest", String(64)),
    Column("wiki_digest", String(64)),  # refs of the latest wiki snapshot; refresh compares
    Column("forge_stamp", String(64)),  # the forge's activity stamp at the latest listing
    Column("metadata_stamp", String(64)),  # the forge_stamp the latest metadata snapshot saw
    Column("upstream", String(16), nullable=False, default="active"),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_snapshot_id", String(64)),
    Index("ix_repo_state_checked", "last_checked_at"),
    Index("ix_repo_state_source", "source_id"),
)


# The HTTP API's own tokens (`repovault token create`): only the SHA-256 of each is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),  # what `token list` shows and `revoke` takes
    Column("name", String(100)),
    Column("scope", String(16), nullable=False),  # read, submit, admin
    Column("token_hash", String(64), nullable=False),  # hex sha256 of the token
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Index("ix_api_tokens_hash", "token_hash", unique=True),
)
# `POST /api/repositories/{repo_id}/verify`: one row per check asked for, from queued to verdict.
repo_verifications = Table(
    "repo_verifications",
    metadata,
    Column("verify_id", String(64), primary_key=True),
    Column("repo_id", String(512), nullable=False),
    Column("snapshot_id", String(64)),  # the snapshot asked for; NULL: the latest
    Column("status", String(16), nullable=False),  # queued, running, passed, failed, error
    # `repo_id@snapshot` while queued or running, NULL once ended: one open check per target.
    Column("open_key", String(600)),
    Column("requested_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("run_id", String(64)),
    Column("verdict", Text),  # JSON of the check's verdict (core.verify.Verdict.to_dict)
    Column("error", Text),  # why it ended without a verdict
    Index("ix_repo_verifications_open", "open_key", unique=True),
    Index("ix_repo_verifications_status", "status"),
)
