"""The complaint form's fields: cleaning and validation, with an error beside each field.

Validation never throws the citizen's input away: the form comes back with what they
typed and a message per field, in their language.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from bot.texts import Catalogue
from contract.fields import clean_text

TEXT_MIN = 10
TEXT_MAX = 4000
NAME_MAX = 100
AREA_MAX = 200
FIELDS = ("name", "phone", "email", "area", "category", "text", "public")


@dataclass
class FormInput:
    """What the citizen typed, cleaned, and the problems found in it."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    phone_e164: str | None = None
    email: str | None = None

    @property
    def public(self) -> bool:
        """The citizen lets the complaint's text be shown publicly (a ticked box; default no)."""
        return self.values.get("public") == "1"


def validate(values: dict[str, str], *, texts: Catalogue, language: str, categories: set[str],
             phone_region: str) -> FormInput:
    """Check the form's fields; messages are in the citizen's language."""
    form = FormInput({name: clean_text(values.get(name, "")) for name in FIELDS})
    v = form.values

    def error(name: str, key: str, **params: object) -> None:
        form.errors.setdefault(name, texts.get(language, f"web.{key}", **params))

    if not v["text"]:
        error("text", "error_text_required")
    elif len(v["text"]) < TEXT_MIN:
        error("text", "error_text_short", min=TEXT_MIN)
    elif len(v["text"]) > TEXT_MAX:
        error("text", "error_text_long", max=TEXT_MAX)
    if len(v["name"]) > NAME_MAX:
        error("name", "error_name_long", max=NAME_MAX)
    if len(v["area"]) > AREA_MAX:
        error("area", "error_area_long", max=AREA_MAX)
    if v["public"] not in ("", "1"):
        v["public"] = ""  # only a ticked box says yes
    if v["category"] and v["category"] not in categories:
        error("category", "error_category")
    if v["phone"]:
        try:
            number = phonenumbers.parse(v["phone"][:40], phone_region)
            if not phonenumbers.is_valid_number(number):
                raise ValueError
            form.phone_e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        except (phonenumbers.NumberParseException, ValueError):
            error("phone", "error_phone")
    if v["email"]:
        try:
            form.email = validate_email(v["email"][:320], check_deliverability=False).normalized
        except EmailNotValidError:
            error("email", "error_email")
    return form
