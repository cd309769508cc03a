"""Baseline: the first release's schema, the table `repo_requests` and its three indexes.

First release: 616de4a ("Faster tree sync"), the commit stop 7 landed. Stop 7 is the first
landing (`issues stops`); its commits end at 616de4a, three hours before the next ones, and stop
8's closing note counts the benchmark results and the pipelined cat-file reader of that commit as
already there. The choice within the first wave changes nothing: every commit from 5910382
("Package skeleton") up to c8e3701 defines this same table in core/lineage/requests.py, and stop 8
(4010246) released it unchanged. Timestamps are `UTCDateTime`, which renders as
`DateTime(timezone=True)`.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "repo_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("repo_url", sa.Text, nullable=False),
        sa.Column("repo_id", sa.String(512)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("creation_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inyector_timestamp", sa.DateTime(timezone=True)),
        sa.Column("worker_start_timestamp", sa.DateTime(timezone=True)),
        sa.Column("worker_finishing_timestamp", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("snapshot_id", sa.String(64)),
        sa.Column("head_commit", sa.String(64)),
        sa.Column("bytes_uploaded", sa.BigInteger),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_repo_requests_repo_id", "repo_requests", ["repo_id"])
    op.create_index("ix_repo_requests_status", "repo_requests", ["status"])
    op.create_index("ix_repo_requests_creation", "repo_requests", ["creation_timestamp"])
