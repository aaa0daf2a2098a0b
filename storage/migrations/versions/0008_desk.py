"""the staff desk: sign-in links, sessions, the sign-in log; the search index; queue indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Search: ``messages.folded`` holds the message's subject and text folded (no diacritics, lower
case, words only: bot.folding.fold), filled by the writes that store messages and, for rows
any other writer left unfolded (NULL), by the catch-up in bot/desk_search.py, which finds
them through a partial index. On SQLite an FTS5 table over that column is kept by triggers;
on PostgreSQL a trigram GIN index (pg_trgm) serves ``folded LIKE '%phrase%'``.
"""

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        'desk_links',
        sa.Column('id', Id, nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('staff_id', Id, nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.Column('used_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_desk_links_staff_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_links')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_desk_links_token_hash')),
    )
    op.create_index('ix_desk_links_staff_created', 'desk_links', ['staff_id', 'created_at'])
    op.create_table(
        'desk_sessions',
        sa.Column('id', Id, nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('staff_id', Id, nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.Column('revoked_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_desk_sessions_staff_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_desk_sessions_token_hash')),
    )
    op.create_index('ix_desk_sessions_staff_id', 'desk_sessions', ['staff_id'])
    op.create_table(
        'desk_sign_ins',
        sa.Column('id', Id, nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('staff_id', Id, nullable=True),
        sa.Column('client', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('detail', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_desk_sign_ins_staff_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_sign_ins')),
    )
    op.create_index('ix_desk_sign_ins_client_at', 'desk_sign_ins', ['client', 'at'])

    # The queues: a unit's open complaints with every column their counts and order read (one
    # index scan counts them all and picks a page, without a row read: the id is there for
    # PostgreSQL, whose index does not hold it otherwise), and an officer's own by deadline.
    op.create_index('ix_complaints_unit_queue', 'complaints',
                    ['unit_id', 'status', 'assignee_id', 'first_response_due', 'first_response_at',
                     'resolution_due', 'apologised_for_due', 'id'])
    op.create_index('ix_complaints_assignee_status', 'complaints',
                    ['assignee_id', 'status', 'first_response_due', 'id'])
    # An admin's list of every unit's complaints, newest first.
    op.create_index('ix_complaints_created_at', 'complaints', ['created_at'])

    op.add_column('messages', sa.Column('folded', sa.Text(), nullable=True))
    op.create_index('ix_messages_unfolded', 'messages', ['id'], sqlite_where=sa.text('folded IS NULL'),
                    postgresql_where=sa.text('folded IS NULL'))
    if dialect == 'sqlite':
        op.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(folded, content='messages', content_rowid='id', "
                   "tokenize='unicode61 remove_diacritics 2')")
        op.execute("CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.folded IS NOT NULL BEGIN "
                   "INSERT INTO messages_fts(rowid, folded) VALUES (new.id, new.folded); END")
        op.execute("CREATE TRIGGER messages_fts_update AFTER UPDATE OF folded ON messages BEGIN "
                   "INSERT INTO messages_fts(messages_fts, rowid, folded) SELECT 'delete', old.id, old.folded "
                   "WHERE old.folded IS NOT NULL; "
                   "INSERT INTO messages_fts(rowid, folded) SELECT new.id, new.folded WHERE new.folded IS NOT NULL; "
                   "END")
        op.execute("CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.folded IS NOT NULL BEGIN "
                   "INSERT INTO messages_fts(messages_fts, rowid, folded) VALUES ('delete', old.id, old.folded); "
                   "END")
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_messages_folded_trgm ON messages USING gin (folded gin_trgm_ops)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        for trigger in ('messages_fts_insert', 'messages_fts_update', 'messages_fts_delete'):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_folded_trgm")
    op.drop_index('ix_messages_unfolded', table_name='messages')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('folded')
    op.drop_index('ix_complaints_created_at', table_name='complaints')
    op.drop_index('ix_complaints_assignee_status', table_name='complaints')
    op.drop_index('ix_complaints_unit_queue', table_name='complaints')
    op.drop_table('desk_sign_ins')
    op.drop_table('desk_sessions')
    op.drop_table('desk_links')
