"""Notes the email channel adds to a stored message, so that staff know what the mail
system did with it: a part it could not read, an attachment it left out and why.

They are written in the service's default language and appended to the message text
under a heading, the only place in an ``Inbound`` that staff are sure to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOTES: dict[str, dict[str, str]] = {
    "vi": {
        "heading": "[Ghi chú của hệ thống thư]",
        "no_from": "Thư không có địa chỉ người gửi (From); đã dùng địa chỉ phong bì {address}.",
        "no_sender": "Thư không có địa chỉ người gửi hợp lệ: không thể trả lời qua thư.",
        "broken_mime": "Cấu trúc MIME của thư bị lỗi ({defects}); nội dung được lưu như đã nhận.",
        "charset": "Không đọc được bảng mã khai báo ({declared}); đã đọc theo {used}.",
        "header_charset": "Tiêu đề thư có ký tự 8 bit không mã hóa; đã đọc theo {used}.",
        "html_unreadable": "Phần HTML không đọc được; đã bỏ các thẻ HTML.",
        "empty_attachment": "Bỏ qua tệp đính kèm rỗng: {name}.",
        "type_refused": "Bỏ qua tệp {name}: không nhận loại tệp {type}.",
        "too_big": "Bỏ qua tệp {name}: {size_kb} KB, vượt giới hạn {max_kb} KB.",
        "too_many": "Bỏ qua {count} tệp đính kèm: mỗi thư nhận tối đa {max} tệp.",
        "nested_too_deep": "Bỏ qua thư chuyển tiếp lồng quá {max} cấp.",
        "only_attachments": "Thư chỉ có tệp đính kèm, không có nội dung.",
        "truncated": "Nội dung quá dài: chỉ lưu {max} ký tự đầu.",
        "forwarded": "---- Thư chuyển tiếp ----",
        "automated": "Thư do máy gửi ({reason}): được lưu lại, không trả lời.",
    },
    "en": {
        "heading": "[Mail system notes]",
        "no_from": "The mail had no sender address (From); the envelope sender {address} was used.",
        "no_sender": "The mail has no valid sender address: no answer can be sent by email.",
        "broken_mime": "The mail's MIME structure is broken ({defects}); the content is kept as received.",
        "charset": "The declared charset ({declared}) could not be read; read as {used}.",
        "header_charset": "The mail's headers carry unencoded 8-bit characters; read as {used}.",
        "html_unreadable": "The HTML part could not be read; its tags were removed.",
        "empty_attachment": "Empty attachment left out: {name}.",
        "type_refused": "Attachment {name} left out: files of type {type} are not taken.",
        "too_big": "Attachment {name} left out: {size_kb} KB, over the limit of {max_kb} KB.",
        "too_many": "{count} attachments left out: at most {max} are taken from one mail.",
        "nested_too_deep": "A forwarded mail nested more than {max} deep was left out.",
        "only_attachments": "The mail has only attachments and no text.",
        "truncated": "The text is too long: only its first {max} characters are kept.",
        "forwarded": "---- Forwarded message ----",
        "automated": "Sent by a machine ({reason}): recorded, not answered.",
    },
}


@dataclass(frozen=True)
class Note:
    """One thing the mail system did with a message, to tell staff."""

    key: str
    params: dict = field(default_factory=dict)


def phrase(key: str, language: str, **params: object) -> str:
    """One catalogue phrase of the email channel in a language (Vietnamese when unknown)."""
    table = NOTES.get(language, NOTES["vi"])
    return table[key].format(**params)


def with_notes(text: str, notes: tuple[Note, ...], language: str) -> str:
    """The message text with the notes appended under their heading."""
    if not notes:
        return text
    lines = [phrase("heading", language)] + [f"- {phrase(n.key, language, **n.params)}" for n in notes]
    return f"{text}\n\n" + "\n".join(lines) if text else "\n".join(lines)
