"""the outbox's index of references holds only the messages whose deliveries are reported by it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

Each outbox message was stored with our reference (``contract.messages.reference_of``, a
hash of its key), and every one entered ``ix_outbox_reference``: a random key, so each new
message wrote an entry at a random place of the index. Only SMS gateways' delivery reports
find a message by it (``bot.delivery.report``); Telegram, email and Zalo report by the
provider's id or not at all, and their senders work the reference out of the key when they
need one. Now only the messages of those channels are stored with it
(``bot.outbox.stored_reference``), and the index holds only the rows that have one
(``WHERE reference IS NOT NULL``): a staff notification or a chat's acknowledgement no
longer enters it. A lookup names a reference, which both databases take as implying
``IS NOT NULL``, so it still uses the index (tests/test_partial_indexes.py checks the plan).

Rows already stored keep their references (rewriting them would rewrite most of the
outbox); the rebuilt index holds them, and only new messages are left out.
"""

from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

SET = sa.text("reference IS NOT NULL")


def upgrade() -> None:
    op.drop_index('ix_outbox_reference', table_name='outbox')
    op.create_index('ix_outbox_reference', 'outbox', ['reference'], unique=False, sqlite_where=SET,
                    postgresql_where=SET)


def downgrade() -> None:
    op.drop_index('ix_outbox_reference', table_name='outbox')
    op.create_index('ix_outbox_reference', 'outbox', ['reference'], unique=False)
