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
"""

from __future__ import annotations

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


def wire(mail: EmailMessage, policy: Policy) -> bytes:
    """The mail as it goes to the relay: headers in ASCII, CRLF line ends."""
    if mail.is_multipart():
        return standard(mail, policy)
    lines = []
    for name, value in mail.items():
        text = str(value)
        if "\r" in text or "\n" in text:
            return standard(mail, policy)
        if text.isascii():
            line = f"{name}: {text}"
        elif name.lower() in ADDRESS_HEADERS:
            # The sender's name, the same in every mail: folded by the email package once.
            line = _folded(name, text, value, policy)
        else:
            line = f"{name}: " + Header(text, "utf-8", header_name=name).encode(linesep="\r\n")
        if any(len(part) > LONGEST_LINE for part in line.split("\r\n")):
            return standard(mail, policy)
        lines.append(line)
    body = mail.get_payload()
    if not isinstance(body, str) or not body.isascii():
        return standard(mail, policy)  # set_content under a 7bit policy leaves it encoded: never here
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    if any(len(part) > LONGEST_LINE for part in body.split("\r\n")):
        return standard(mail, policy)
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("ascii")
