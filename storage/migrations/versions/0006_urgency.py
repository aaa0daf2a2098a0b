"""urgency, waiting for the citizen, disputed resolutions, public complaints

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-05

A complaint is urgent, normal or complex (Hà Nội's Quyết định 1207/QĐ-UBND), kept to those
by a CHECK constraint; a routing rule may set it (and may do only that: no unit). A
complaint may wait for the citizen (a new status, so the status CHECK is rewritten), with
the clock paused; a complex one may be extended once; a citizen may dispute a resolution;
and may let the complaint's text be public. Officers cover areas, for urgent pages.
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = '0006'
down_revision = '0004'
branch_labels = None
depends_on = None

STATUSES = ("new", "assigned", "answered", "resolved", "reopened", "waiting", "closed")
EARLIER_STATUSES = ("new", "assigned", "answered", "resolved", "reopened", "closed")
URGENCIES = ("urgent", "normal", "complex")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    when = storage.models.UTCDateTime(timezone=True)
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('urgency', sa.String(length=8), nullable=False, server_default='normal'))
        batch_op.add_column(sa.Column('paused_at', when, nullable=True))
        batch_op.add_column(sa.Column('waiting_reminded_at', when, nullable=True))
        batch_op.add_column(sa.Column('extended_at', when, nullable=True))
        batch_op.add_column(sa.Column('disputed_at', when, nullable=True))
        batch_op.add_column(sa.Column('public', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.drop_constraint(op.f('ck_complaints_status'), type_='check')
        batch_op.create_check_constraint('status', f"status IN {_in(STATUSES)}")
        batch_op.create_check_constraint('urgency', f"urgency IN {_in(URGENCIES)}")
    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('urgency', sa.String(length=8), nullable=True))
        batch_op.alter_column('unit_id', existing_type=sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                              nullable=True)
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('areas', sa.JSON(), nullable=False, server_default='[]'))
    op.create_index('ix_events_kind_at', 'events', ['kind', 'at'])


def downgrade() -> None:
    op.drop_index('ix_events_kind_at', table_name='events')
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('areas')
    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.alter_column('unit_id', existing_type=sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                              nullable=False)
        batch_op.drop_column('urgency')
    with op.batch_alter_table('complaints', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_complaints_urgency'), type_='check')
        batch_op.drop_constraint(op.f('ck_complaints_status'), type_='check')
        batch_op.create_check_constraint('status', f"status IN {_in(EARLIER_STATUSES)}")
        for column in ('public', 'disputed_at', 'extended_at', 'waiting_reminded_at', 'paused_at', 'urgency'):
            batch_op.drop_column(column)
