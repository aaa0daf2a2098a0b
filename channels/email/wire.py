"""An outgoing mail as the bytes handed to the relay, without the email package's refolding.

``email.policy``'s generator refolds every header it writes through its RFC 5322 parser;
for a Vietnamese Subject or sender name, written as RFC 2047 encoded words, that took
about 2 ms a mail: the largest single cost of acknowledging a complaint by email, more
than parsing the citizen's mail (bench/README.md, the SMTP profile). A one-part mail
(acknowledgements, notices, replies: plain text) is written here with the email package's
own compat32 encoder (``email.header.Header``) for unstructured headers such as the
Subject, which says the same thing in encoded words folded at 78 characters; an address
header is folded by the email package as before, and the sender's (the same in every
mail) kept. Anything else (a digest with its chart, attachments, an internationalised
address) goes through the standard generator.

Such a mail need not be an ``EmailMessage`` at all (``plain``): building one, each header
put through the email package's parser and the body through its content manager, took
0.7 ms of the relay's 0.75 ms a mail, more than parsing the citizen's mail
(bench/README.md, thirteenth session). ``plain`` writes the same bytes from the header
values and the text, with the content manager's own body encoder; the relay uses it for
the mails whose values it can vouch parse back unchanged, and compares nothing at run
time: tests/test_email_relay.py holds it to the built mail's bytes.
"""

from __future__ import annotations

from email import contentmanager
from email.header import Header
from email.message import EmailMessage
from email.policy import Policy

# Headers whose value is a list of addresses: written by the email package (and kept).
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})
LONGEST_LINE = 998  # RFC 5322's limit on a line, CRLF not counted


_FOLDED: dict[tuple[str, str, int | None], str] = {}


def _folded(name: str, text: str, value, policy: Policy) -> str:
    key = (name, text, policy.max_line_length)
    line = _FOLDED.get(key)
    if line is None:
        line = value.fold(policy=policy.clone(linesep="\r\n")).rstrip("\r\n")
        if len(_FOLDED) < 64:  # the sender's few names; a citizen's is folded each time
            _FOLDED[key] = line
    return line


def standard(mail: EmailMessage, policy: Policy) -> bytes:
    """The email package's own flattening (what aiosmtplib's ``send_message`` does)."""
    return mail.as_bytes(policy=policy.clone(linesep="\r\n"))


def _line(name: str, text: str, value, policy: Policy) -> str:
    """One header as it goes to the relay, folded lines joined by CRLF."""
    if text.isascii():
        return f"{name}: {text}"
    if name.lower() in ADDRESS_HEADERS:
        # The sender's name, the same in every mail: folded by the email package once.
        return _folded(name, text, value, policy)
    return f"{name}: " + Header(text, "utf-8", header_name=name).encode(linesep="\r\n")


def _written(lines: list[str], body: str) -> bytes | None:
    """The mail from its header lines and its body as the message holds it; None when a
    line would be too long or the body is not ASCII (then the standard generator writes it)."""
    if any(len(part) > LONGEST_LINE for line in lines for part in line.split("\r\n")):
        return None
    if not body.isascii():
        return None  # set_content under a 7bit policy leaves it encoded: never here
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    if any(len(part) > LONGEST_LINE for part in body.split("\r\n")):
        return None
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("ascii")


def wire(mail: EmailMessage, policy: Policy) -> bytes:
    """The mail as it goes to the relay: headers in ASCII, CRLF line ends."""
    if mail.is_multipart():
        return standard(mail, policy)
    lines = []
    for name, value in mail.items():
        text = str(value)
        if "\r" in text or "\n" in text:
            return standard(mail, policy)
        lines.append(_line(name, text, value, policy))
    body = mail.get_payload()
    written = _written(lines, body) if isinstance(body, str) else None
    return standard(mail, policy) if written is None else written


# The email package's encoder of a text body (what ``set_content`` calls): private, so
# looked up, not imported; without it every mail is built.
_encode_text = getattr(contentmanager, "_encode_text", None)


def _one_line(value: str) -> bool:
    """No line break, as ``wire`` sees one (CR, LF) or the email package (``splitlines``)."""
    return "\r" not in value and "\n" not in value and len(value.splitlines()) <= 1


def plain(head: list[tuple[str, str]], sender: tuple[str, object], text: str, language: str,
          policy: Policy) -> bytes | None:
    """A one-part plain-text mail written without building it: ``sender`` first (the From
    header's value and the header the email package made of it, folded once), then ``head``
    (each value written as the email package would read it back: unstructured text with no
    encoded word, an address, a date, message ids), then what ``set_content`` adds, and the
    Content-Language. The same bytes as ``wire`` of the mail built with those headers in
    that order; None when ``wire`` would hand that mail to the standard generator."""
    if _encode_text is None:
        return None
    if not all(_one_line(value) for _, value in head) or not _one_line(language):
        return None  # the email package refuses it, or the standard generator writes it
    cte, body = _encode_text(text, "utf-8", None, policy)
    lines = [_line("From", sender[0], sender[1], policy)] + [_line(name, value, None, policy) for name, value in head]
    lines += ['Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {cte}", "MIME-Version: 1.0",
              _line("Content-Language", language, None, policy)]
    return _written(lines, body)
