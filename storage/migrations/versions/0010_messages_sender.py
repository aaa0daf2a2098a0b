"""an index on a citizen's messages by channel and sender

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A channel with a reply window (Zalo's consultation messages) may write to a citizen only so
long after their last message, so choosing where a message goes asks for that last message
(``bot/reach.py``, ``windows``): by channel and sender. Only ``(channel, external_id)`` was
indexed, so each look read every message of the channel: every Zalo message ever received,
for every acknowledgement, apology and answer to a Zalo citizen. ``(channel, sender,
created_at)`` gives each citizen's messages, newest last.
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_messages_channel_sender', 'messages', ['channel', 'sender', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_channel_sender', table_name='messages')
