"""The HTTP API's authentication and its verify queue: the tables `api_tokens` and
`repo_verifications`.

`api_tokens`: one row per token `repovault token create` made: its id, name, scope (read,
submit, admin), the SHA-256 of the token (the token itself is shown once and kept nowhere),
when it was created, last used and revoked. `repo_verifications`: one row per `restorable`
check asked for over the API, from `queued` to its verdict; `open_key` is set while the check
is queued or running, and unique, so one target has one open check however many ask at once.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

UTC_TIME = sa.DateTime(timezone=True)  # what tables.py's UTCDateTime renders as

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100)),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("last_used_at", UTC_TIME),
        sa.Column("revoked_at", UTC_TIME),
    )
    op.create_index("ix_api_tokens_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_table(
        "repo_verifications",
        sa.Column("verify_id", sa.String(64), primary_key=True),
        sa.Column("repo_id", sa.String(512), nullable=False),
        sa.Column("snapshot_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(600)),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("started_at", UTC_TIME),
        sa.Column("finished_at", UTC_TIME),
        sa.Column("run_id", sa.String(64)),
        sa.Column("verdict", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_repo_verifications_open", "repo_verifications", ["open_key"], unique=True)
    op.create_index("ix_repo_verifications_status", "repo_verifications", ["status"])
