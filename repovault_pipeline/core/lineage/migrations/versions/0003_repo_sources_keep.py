"""Selection per tracked source: the column `repo_sources.keep`.

What runs of the source's repositories keep (JSON: lfs, wiki, metadata). Added by dcd6e1c,
released by stop 16 (699cc7d). Nullable: a source without it follows the settings.

Batch mode, as every ALTER here should be: on PostgreSQL a plain ALTER TABLE, on SQLite (which
alters little in place) Alembic copies the table when the change needs it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("repo_sources") as batch:
        batch.add_column(sa.Column("keep", sa.Text))
