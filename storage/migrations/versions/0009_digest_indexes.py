"""per-unit indexes on the timestamps the digest reads

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

A digest gathers a unit's complaints with anything since the start of its chart's 30 days:
created, first answered, resolved or rated since then, or open now. ``(unit_id,
created_at)`` exists since 0001 and the open ones are found through 0008's
``ix_complaints_unit_queue`` (unit, status, ...); these three give the other timestamps the
same per-unit range, so the digest reads the unit's recent rows and not all of them.
"""

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_complaints_unit_first_response': ['unit_id', 'first_response_at'],
    'ix_complaints_unit_resolved': ['unit_id', 'resolved_at'],
    'ix_complaints_unit_rated': ['unit_id', 'rated_at'],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, 'complaints', columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name='complaints')
