"""The staff desk's section of the configuration, ``[desk]``: how long sign-in links and
sessions live, the limits against guessing and flooding, and who sees citizens' contacts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.desk import SignInPolicy
from contract.schema import OptionalEnvName, Section

Role = Literal["agent", "head", "admin"]


class DeskConfig(Section):
    enabled: bool = True
    # A link works once, and only for this long after it was sent.
    link_minutes: float = Field(15.0, gt=0, le=120)
    # A browser stays signed in this long; then a new link is needed.
    session_hours: float = Field(10.0, gt=0, le=168)
    # Links one staff member may be sent in an hour.
    links_per_hour: int = Field(5, ge=1, le=100)
    # Per client address, within window_minutes: link requests, and bad, stale or used links
    # presented, before further tries are refused until the window passes.
    requests_per_window: int = Field(10, ge=1, le=1000)
    failures_per_window: int = Field(10, ge=1, le=1000)
    window_minutes: float = Field(15.0, gt=0, le=1440)
    # Who sees a citizen's phone number or e-mail address unmasked.
    contact_roles: list[Role] = ["head", "admin"]
    # The key that signs the desk's cookies and forms; without one, a key is made once and
    # kept in the store, shared by every process.
    secret_env: OptionalEnvName = None

    def policy(self) -> SignInPolicy:
        """The sign-in policy the domain applies."""
        return SignInPolicy(link_minutes=self.link_minutes, session_hours=self.session_hours,
                            links_per_hour=self.links_per_hour, requests_per_window=self.requests_per_window,
                            failures_per_window=self.failures_per_window, window_minutes=self.window_minutes)

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The signing key's variable, when one is named."""
        return [("secret_env", self.secret_env)] if self.enabled else []
