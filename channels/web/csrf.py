"""CSRF protection for the web form: a signed double-submit token.

The browser holds a random nonce in a cookie; the form carries HMAC(key, nonce). A
cross-site page can make the browser send the cookie but can neither read it nor compute
the HMAC without the service's key, so it cannot forge the form field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "fi_csrf"
FIELD = "csrf_token"


def new_nonce() -> str:
    """A fresh random nonce for the cookie."""
    return secrets.token_urlsafe(24)


def token_for(key: bytes, nonce: str) -> str:
    """The form token that goes with a nonce."""
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()


def is_valid(key: bytes, nonce: str | None, token: str | None) -> bool:
    """True when the form's token matches the cookie's nonce (compared in constant time)."""
    if not nonce or not token or len(nonce) > 200:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (TypeError), and a
    # posted token may hold anything.
    return hmac.compare_digest(token_for(key, nonce).encode(), token.encode("utf-8", "replace"))
