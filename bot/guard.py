"""The last guard before the store: every field of an ``Inbound`` that came from outside is
cleaned or refused here, whatever channel it came by.

Each channel already cleans what it parses (``contract.fields``), so that it can refuse in
its own protocol; this guard makes the rule hold for a channel that forgot, or one added
later. Free text (the message, the sender's name, the subject, the ward) is cleaned and
cut to its column; identifiers and addresses (the channel's message id, the sender, the
addresses answers go to, the gateway, the ids it replies to) are refused with an
``IntakeError`` naming the field when they cannot be stored as they are: changing one
would make two deliveries of one message two complaints, or two messages one.
"""

from __future__ import annotations

from dataclasses import replace

from contract import fields
from contract.fields import FieldError
from contract.messages import CHANNELS, Attachment, Inbound
from contract.results import IntakeError


def _attachment(item: Attachment) -> Attachment:
    return replace(item, filename=fields.clean_line(item.filename, fields.FILENAME_MAX) or "attachment",
                   content_type=fields.clean_line(item.content_type, fields.CONTENT_TYPE_MAX)
                   or "application/octet-stream",
                   reference=fields.identifier(item.reference, "attachment reference", fields.REFERENCE_MAX)
                   if item.reference is not None else None,
                   caption=fields.clean_text(item.caption))


def checked(inbound: Inbound) -> Inbound:
    """The message with its free text cleaned; IntakeError when an identifier cannot be stored."""
    if inbound.channel not in CHANNELS:
        raise IntakeError(f"unknown channel {inbound.channel[:20]!r}")
    try:
        external_id = None if inbound.external_id is None else \
            fields.identifier(inbound.external_id, "message id", fields.EXTERNAL_ID_MAX)
        sender = None if inbound.sender is None else fields.identifier(inbound.sender, "sender", fields.ADDRESS_MAX)
        reply_to = tuple((fields.identifier(channel, "reply channel", 16),
                          fields.identifier(address, "reply address", fields.ADDRESS_MAX))
                         for channel, address in inbound.reply_to if address)
        via = None if inbound.via is None else fields.identifier(inbound.via, "gateway", fields.VIA_MAX)
        in_reply_to = tuple(fields.identifier(item, "replied-to id", fields.EXTERNAL_ID_MAX)
                            for item in inbound.in_reply_to)
        codes = tuple(fields.identifier(code, "tracking code", 40) for code in inbound.tracking_codes)
        category = None if inbound.category is None else \
            fields.identifier(inbound.category, "category", fields.CATEGORY_MAX)
        attachments = tuple(_attachment(item) for item in inbound.attachments)
    except FieldError as error:
        raise IntakeError(str(error)) from None
    return replace(
        inbound, external_id=external_id, sender=sender, reply_to=reply_to, via=via, in_reply_to=in_reply_to,
        tracking_codes=codes, category=category, attachments=attachments,
        text=fields.clean_text(inbound.text),
        sender_name=fields.clean_line(inbound.sender_name, fields.NAME_MAX) or None,
        subject=fields.clean_line(inbound.subject, fields.SUBJECT_MAX) or None,
        area=fields.clean_line(inbound.area, fields.AREA_MAX) or None,
        language=fields.clean_line(inbound.language, 16) or None,
    )
