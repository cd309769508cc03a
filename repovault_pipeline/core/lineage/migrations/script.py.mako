"""${message}

Why the schema changes, and the commit that changes tables.py. Written by hand: explicit
operations, ALTERs inside `op.batch_alter_table` (SQLite), no autogenerate at run time.

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

import sqlalchemy as sa
from alembic import op

revision = "${up_revision}"
down_revision = "${down_revision}"


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
