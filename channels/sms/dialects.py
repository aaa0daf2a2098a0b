"""The gateway dialects by configured ``kind``: each module parses its webhook, answers it,
and sends through its operator's API with the same functions (``parse``, ``accepted``,
``send``, ``CONTENT_TYPE``)."""

from __future__ import annotations

from types import ModuleType

from channels.sms import android, generic, twilio

DIALECTS: dict[str, ModuleType] = {"twilio": twilio, "android": android, "generic": generic}
