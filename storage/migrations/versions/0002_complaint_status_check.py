"""a complaint's status is one of the statuses bot/statuses.py names

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05

The values are written out here on purpose: a migration is a record of the schema at one
moment, and must not change when the code's list does (a later list gets its own
migration). tests/test_statuses.py checks that this list and ``bot.statuses.Status``
agree.
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

STATUSES = ("new", "assigned", "answered", "resolved", "reopened", "closed")


def upgrade() -> None:
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.create_check_constraint(
            'status', "status IN (" + ", ".join(f"'{status}'" for status in STATUSES) + ")")


def downgrade() -> None:
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.drop_constraint('ck_complaints_status', type_='check')
