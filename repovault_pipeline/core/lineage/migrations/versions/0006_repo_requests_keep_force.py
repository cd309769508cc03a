"""What a request asked for beside the repository's history: the columns
`repo_requests.keep` and `repo_requests.force`.

`keep`: JSON of the request's own choice of extras (`{"lfs": true, "wiki": false}`; NULL: the
settings' defaults), `force`: a fresh full snapshot even if nothing changed (NULL: not forced).
Both are written with the `pending` row, so `reconcile_sensor` republishes a request that never
became a run with what it asked for. Rows written before this revision have neither.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("repo_requests") as batch:
        batch.add_column(sa.Column("keep", sa.Text))
        batch.add_column(sa.Column("force", sa.Boolean))
