"""indexes for looking a citizen's messages up by sender, and our sent messages by the
provider's id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Both lookups read every row of a channel before (found by running EXPLAIN on the statements
the tests make; ``bench/reply_window.py`` measures the first):

* ``messages (channel, sender, created_at)``: a channel with a reply window (Zalo's
  consultation messages) may write to a citizen only so long after their last message, so
  choosing where a message goes asks for that last message (``bot/reach.py``, ``windows``),
  for every acknowledgement, apology and answer to a Zalo citizen. Only ``(channel,
  external_id)`` was indexed.
* ``outbox (channel, external_id)``: a citizen's reply to one of our messages (an email's
  In-Reply-To, ``bot/threads.py``), a staff member's reply to a notification
  (``bot/staff.py``, ``code_for_message``) and a provider's report that names only its own
  id for our message (``bot/delivery.py``, ``report``) find that message by the provider's id.
  Nothing indexed it: each read the whole outbox.
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_messages_channel_sender': ('messages', ['channel', 'sender', 'created_at']),
    'ix_outbox_channel_external_id': ('outbox', ['channel', 'external_id']),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
