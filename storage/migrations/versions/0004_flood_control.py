"""flood control: counters per client and window; bursts of staff notifications

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-05

``rate_counters`` counts requests per client (a hash) in fixed windows, shared by every
process; ``notification_bursts`` counts new-complaint notifications per staff address in
a window and keeps the codes held back for one summary (issue 18).
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_counters',
        sa.Column('scope', sa.String(length=32), nullable=False),
        sa.Column('client', sa.String(length=32), nullable=False),
        sa.Column('window_end', sa.BigInteger(), nullable=False),
        sa.Column('hits', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('scope', 'client', 'window_end', name=op.f('pk_rate_counters')),
    )
    op.create_index(op.f('ix_rate_counters_window_end'), 'rate_counters', ['window_end'], unique=False)
    op.create_table(
        'notification_bursts',
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('recipient', sa.String(length=320), nullable=False),
        sa.Column('window_end', sa.BigInteger(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('held', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('channel', 'recipient', 'window_end', name=op.f('pk_notification_bursts')),
    )
    op.create_index(op.f('ix_notification_bursts_window_end'), 'notification_bursts', ['window_end'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_notification_bursts_window_end'), table_name='notification_bursts')
    op.drop_table('notification_bursts')
    op.drop_index(op.f('ix_rate_counters_window_end'), table_name='rate_counters')
    op.drop_table('rate_counters')
