"""at-least-once delivery, receipts, contact points and fallback

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

The outbox records which worker incarnation holds a claim and whether an attempt's outcome
is unknown; what the provider reported afterwards; and which message a fallback stands in
for. Workers keep a heartbeat. Contact links join a citizen's contact points.
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = storage.models.UTCDateTime(timezone=True)
    ident = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('unsure', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('resent', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('delivery', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('delivery_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', when, nullable=True))
        batch_op.add_column(sa.Column('fallback_of', ident, nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_outbox_fallback_of_outbox'), 'outbox', ['fallback_of'], ['id'])
        batch_op.create_index(batch_op.f('ix_outbox_reference'), ['reference'], unique=False)
        batch_op.create_index('ix_outbox_claimed_by_status', ['claimed_by', 'status'], unique=False)
        batch_op.drop_column('lease_until')
        batch_op.drop_column('claim_token')
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unreachable_at', when, nullable=True))
        batch_op.create_index(batch_op.f('ix_complaints_unreachable_at'), ['unreachable_at'], unique=False)
    op.create_table('workers',
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('incarnation', sa.String(length=36), nullable=False),
    sa.Column('started_at', when, nullable=False),
    sa.Column('heartbeat_at', when, nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_workers'))
    )
    op.create_index(op.f('ix_workers_heartbeat_at'), 'workers', ['heartbeat_at'], unique=False)
    op.create_table('contact_links',
    sa.Column('id', ident, nullable=False),
    sa.Column('contact_id', ident, nullable=False),
    sa.Column('linked_id', ident, nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('created_at', when, nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contact_links_contact_id_contacts')),
    sa.ForeignKeyConstraint(['linked_id'], ['contacts.id'], name=op.f('fk_contact_links_linked_id_contacts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_links')),
    sa.UniqueConstraint('contact_id', 'linked_id', name=op.f('uq_contact_links_contact_id_linked_id'))
    )
    op.create_index(op.f('ix_contact_links_contact_id'), 'contact_links', ['contact_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_contact_links_contact_id'), table_name='contact_links')
    op.drop_table('contact_links')
    op.drop_index(op.f('ix_workers_heartbeat_at'), table_name='workers')
    op.drop_table('workers')
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_complaints_unreachable_at'))
        batch_op.drop_column('unreachable_at')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_token', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('lease_until', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.drop_index('ix_outbox_claimed_by_status')
        batch_op.drop_index(batch_op.f('ix_outbox_reference'))
        batch_op.drop_constraint(batch_op.f('fk_outbox_fallback_of_outbox'), type_='foreignkey')
        for column in ('fallback_of', 'delivered_at', 'delivery_reason', 'delivery', 'resent', 'unsure',
                       'claimed_by', 'reference'):
            batch_op.drop_column(column)
