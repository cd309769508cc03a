"""Partial outcomes: the column `repo_requests.reasons`.

A request whose code snapshot is stored but some other part it asked to keep is not (LFS
objects the server lacks, the wiki, the forge metadata) ends `partial`; `reasons` holds why, as
JSON: reason name (`lfs_missing`, `wiki_failed`, `metadata_failed`) -> one-line detail.
Nullable: a request with nothing missing has none.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("repo_requests") as batch:
        batch.add_column(sa.Column("reasons", sa.Text))
