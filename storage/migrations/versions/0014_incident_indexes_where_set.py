"""the incident search's indexes by kind, place and cell hold only the open complaints that have one

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Migration 0007 gave the candidate search (``bot/incidents/candidates.py``) one partial index
per way of finding an incident's reports, each on open complaints: by kind of event and
place, by kind, by place, by geo cell, by age. Every open complaint entered all five, with
or without a kind, a place or a location: most complaints come without a location (an SMS,
a mail, a chat), so most entries of the cell index were empty, and on PostgreSQL every
update of an open complaint that is not a heap-only one (the sweep's always changes an
indexed column) wrote them again. Now the indexes by kind, place and cell hold only the
open complaints that have one (``AND column IS NOT NULL``); the index by age still holds
every open complaint (the search's "most recent" branch reads it). Each branch of the
search names a value of its column (``=`` or ``IN``), which both databases take as
implying ``IS NOT NULL``, so each still reads its index (tests/test_partial_indexes.py
checks the plan on both).
"""

from alembic import op
import sqlalchemy as sa

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

OPEN = "status IN ('answered', 'assigned', 'new', 'reopened', 'waiting')"
INDEXES = {
    'ix_complaints_open_topic_place': (['match_topic', 'match_place', 'created_at'], 'match_topic'),
    'ix_complaints_open_topic': (['match_topic', 'created_at'], 'match_topic'),
    'ix_complaints_open_place': (['match_place', 'created_at'], 'match_place'),
    'ix_complaints_open_cell': (['geo_cell', 'created_at'], 'geo_cell'),
}


def _create(name: str, columns: list[str], where: str) -> None:
    op.create_index(name, 'complaints', columns, unique=False, sqlite_where=sa.text(where),
                    postgresql_where=sa.text(where))


def upgrade() -> None:
    for name, (columns, column) in INDEXES.items():
        op.drop_index(name, table_name='complaints')
        _create(name, columns, f"{OPEN} AND {column} IS NOT NULL")


def downgrade() -> None:
    for name, (columns, _) in INDEXES.items():
        op.drop_index(name, table_name='complaints')
        _create(name, columns, OPEN)
