"""incidents: complaints about one event grouped, and what the matcher looks them up by

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

The candidate search at intake reads open complaints by kind of event and place key, by
kind of event, by place key and by geo cell, each within a time window: one partial index per way, on open complaints
only, so the search reads a handful of index entries however many complaints are stored.
The open statuses (with 0006's 'waiting') are written out here on purpose (a migration records the
schema at one moment); bot/incidents/candidates.py builds the same condition from
bot.statuses, and tests/test_incident_matching.py checks that the two agree.
"""

from alembic import op
import sqlalchemy as sa
import storage.models

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
OPEN = "status IN ('answered', 'assigned', 'new', 'reopened', 'waiting')"
INDEXES = {
    'ix_complaints_open_topic_place': ['match_topic', 'match_place', 'created_at'],
    'ix_complaints_open_topic': ['match_topic', 'created_at'],
    'ix_complaints_open_place': ['match_place', 'created_at'],
    'ix_complaints_open_cell': ['geo_cell', 'created_at'],
    'ix_complaints_open_created': ['created_at'],
}


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', Id, nullable=False),
    sa.Column('lead_complaint_id', Id, nullable=False),
    sa.Column('unit_id', Id, nullable=False),
    sa.Column('topic', sa.String(length=24), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('reports', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('merged_into_id', Id, nullable=True),
    sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_complaint_id'], ['complaints.id'], name=op.f('fk_incidents_lead_complaint_id_complaints')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_incidents_unit_id_units')),
    sa.ForeignKeyConstraint(['merged_into_id'], ['incidents.id'], name=op.f('fk_incidents_merged_into_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('incident_id', Id, nullable=True))
        batch_op.add_column(sa.Column('incident_role', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('match_topic', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('match_place', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('geo_cell', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('match_features', sa.JSON(), nullable=True))
        batch_op.create_foreign_key(op.f('fk_complaints_incident_id_incidents'), 'incidents', ['incident_id'], ['id'])
        batch_op.create_index(batch_op.f('ix_complaints_incident_id'), ['incident_id'], unique=False)
    for name, columns in INDEXES.items():
        op.create_index(name, 'complaints', columns, unique=False,
                        sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name='complaints')
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_complaints_incident_id'))
        batch_op.drop_constraint(op.f('fk_complaints_incident_id_incidents'), type_='foreignkey')
        for column in ('match_features', 'geo_cell', 'match_place', 'match_topic', 'incident_role', 'incident_id'):
            batch_op.drop_column(column)
    op.drop_table('incidents')
