"""Tracked sources and refresh: the tables `repo_sources` and `repo_state`.

`repo_sources`: one row per tracked organisation or group; `repo_state`: one row per known
repository, what upstream looked like when last checked. Added by c8e3701, released by stop 16
(699cc7d).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "repo_sources",
        sa.Column("source_id", sa.String(600), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("skip_forks", sa.Boolean, nullable=False),
        sa.Column("skip_archived", sa.Boolean, nullable=False),
        sa.Column("include", sa.Text),
        sa.Column("exclude", sa.Text),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_listed_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "repo_state",
        sa.Column("repo_id", sa.String(512), primary_key=True),
        sa.Column("repo_url", sa.Text, nullable=False),
        sa.Column("source_id", sa.String(600)),
        sa.Column("last_checked_at", sa.DateTime(timezone=True)),
        sa.Column("last_changed_at", sa.DateTime(timezone=True)),
        sa.Column("refs_digest", sa.String(64)),
        sa.Column("upstream", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_snapshot_id", sa.String(64)),
    )
    op.create_index("ix_repo_state_checked", "repo_state", ["last_checked_at"])
    op.create_index("ix_repo_state_source", "repo_state", ["source_id"])
