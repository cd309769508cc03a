"""What refresh compares beside the code's refs: the columns `repo_state.wiki_digest`,
`repo_state.forge_stamp` and `repo_state.metadata_stamp`.

`wiki_digest`: sha256 of the wiki refs the latest wiki snapshot holds (that of no refs when the
repository has no wiki), written by the archive run. `forge_stamp`: the forge's activity stamp
from the latest listing of the repository's source (GitHub `updated_at pushed_at`, GitLab
`last_activity_at`), written by `sources_sensor`. `metadata_stamp`: the `forge_stamp` the latest
metadata snapshot is at least as new as, written by `repo_metadata`. All nullable: a row without
them has not recorded that signal yet, and its next check requests a run that records it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("repo_state") as batch:
        batch.add_column(sa.Column("wiki_digest", sa.String(64)))
        batch.add_column(sa.Column("forge_stamp", sa.String(64)))
        batch.add_column(sa.Column("metadata_stamp", sa.String(64)))
