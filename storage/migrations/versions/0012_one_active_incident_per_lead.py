"""one active incident per lead complaint, kept by the database

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Two workers' intake batches may each want to make an incident around the same complaint;
``bot/incidents/grouping.py`` takes an advisory lock to make one (PostgreSQL) and reads the
complaint again under it, so the second joins the first's incident. This unique partial
index makes that a guarantee of the store as well: should the lock ever be bypassed, the
second incident is refused (its batch rolls back and its gateway retries), never kept.
Merged and ended incidents keep the lead they had and are not counted.
"""

from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_index('uq_incidents_active_lead', 'incidents', ['lead_complaint_id'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index('uq_incidents_active_lead', table_name='incidents')
