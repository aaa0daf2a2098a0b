"""The port a channel is given: everything a channel may ask of the domain, and nothing
more. No database session crosses it; what comes back are plain values
(``contract.results``), and errors are the contract's (``IntakeError``,
``StoreUnavailable``, ``NotAllowed``, ``LifecycleError``, ``RatingError``).

A channel receives a citizen's message (``receive``), looks a tracking code up
(``lookup``: found, malformed or unknown, the same for every channel), offers the
citizen's actions (their complaints, language, drafts, a rating, a reply that belongs to
no complaint) and the staff actions (claim, answer, note, resolve, reassign, lists, the
whole case, files, linking a chat), and reports health and metrics. Staff actions are
authorised in ``bot/staff.py``, whichever channel they come from. The staff desk's section
(sign-in links and sessions, queues and search, a case's page, the heads' figures, the
admin's pages) delegates to the ``bot/desk_*`` modules.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import text as sql
from sqlalchemy.exc import SQLAlchemyError

from bot import (citizens, credentials, delivery, desk_admin, desk_auth, desk_case, desk_queries, digests, limits,
                 messages, outbox, reports, satisfaction, staff, status, sync)
from bot.clock import Clock
from bot.core import Core
from bot.intake import IntakeWriter
from bot.settings import Settings
from bot.statuses import OPEN, Status
from bot.texts import Catalogue
from contract.desk import (CaseView, DeskSession, FailedMessage, Filters, QueuePage, SignInOutcome, SignInPolicy,
                           StaffLine)
from contract.messages import Attachment, DeliveryState, Inbound, Outgoing
from contract.results import (Case, CaseSummary, IncidentSummary, IntakeResult, Lookup, NotAllowed, Officer,
                              PublicStatus, StoredFile, StoreUnavailable)


def _store_errors(cls: type) -> type:
    """Every coroutine of the port turns the store's failures into ``StoreUnavailable``,
    so a channel answers "try again later" in its own protocol (HTTP 503, SMTP 451)
    without knowing what a database is."""
    for name, method in list(vars(cls).items()):
        if inspect.iscoroutinefunction(method) and not name.startswith("_"):
            setattr(cls, name, _translated(method))
    return cls


def _translated(method: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    @functools.wraps(method)
    async def call(*args: object, **kwargs: object) -> object:
        try:
            return await method(*args, **kwargs)
        except (StoreUnavailable, NotAllowed):  # NotAllowed is a PermissionError, an OSError
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            raise StoreUnavailable(type(error).__name__) from error

    return call


@_store_errors
class Port:
    """What channels may ask of the domain; one per process, built by the wiring."""

    def __init__(self, core: Core, writer: IntakeWriter):
        self._core = core
        self._writer = writer
        self._limiter = limits.Limiter(core)

    # ------------------------------------------------------------------ what every channel reads

    @property
    def config(self) -> Settings:
        """The domain's settings (service name, language, tracking prefix, units, categories)."""
        return self._core.config

    @property
    def texts(self) -> Catalogue:
        """The message catalogue."""
        return self._core.texts

    @property
    def clock(self) -> Clock:
        """The service's clock."""
        return self._core.clock

    @property
    def public_url(self) -> str:
        """The address citizens and gateways see."""
        return self._core.public_url

    def format_time(self, moment: datetime | None, language: str) -> str:
        """A time as citizens read it, in the service's time zone."""
        return messages.format_time(self._core, moment, language)

    def unit_name(self, unit_id: int, language: str) -> str:
        """A unit's name in a language."""
        return self._core.directory.unit_name(unit_id, language)

    def track_url(self, code: str) -> str:
        """The public status page of a complaint."""
        return messages.track_url(self._core, code)

    # ------------------------------------------------------------------ citizens

    async def receive(self, inbound: Inbound) -> IntakeResult:
        """Store a citizen's message and queue what it causes; returns once committed."""
        return await self._writer.submit(inbound)

    def parse_code(self, code: str) -> Lookup:
        """A tracking code as typed, in normal form, or malformed with why (not looked up)."""
        return status.parse(self._core, code)

    async def lookup(self, code: str) -> Lookup:
        """A tracking code as typed: found (with its public status), malformed, or unknown."""
        return await status.lookup(self._core, code)

    def status_text(self, found: PublicStatus, language: str, channel: str = "web") -> str:
        """One complaint's status as a short message, in the channel's variant."""
        return status.status_text(self._core, found, language, channel)

    async def search(self, **filters: object) -> list[PublicStatus]:
        """Public statuses by codes, categories, dates, open or closed (Open311's listing)."""
        return await status.search(self._core, **filters)

    async def complaints_of(self, channel: str, address: str, limit: int = 10) -> list[PublicStatus]:
        """The citizen's latest complaints, newest first."""
        return await citizens.complaints_of(self._core, channel, address, limit)

    async def owns(self, channel: str, address: str, code: str) -> bool:
        """True when this complaint belongs to the citizen at this address."""
        return await citizens.owns(self._core, channel, address, code)

    async def language_of(self, channel: str, address: str) -> str | None:
        """The language the citizen chose, if we know them."""
        return await citizens.language_of(self._core, channel, address)

    async def set_language(self, channel: str, address: str, language: str) -> str:
        """Remember the citizen's language; return the one set."""
        return await citizens.set_language(self._core, channel, address, language)

    async def reply(self, message: Outgoing) -> None:
        """Queue an answer that belongs to no complaint (a status request's) to a citizen."""
        await citizens.reply(self._core, message)

    async def load_draft(self, channel: str, address: str) -> dict | None:
        """The citizen's unfinished message, if any."""
        return await citizens.load_draft(self._core, channel, address)

    async def save_draft(self, channel: str, address: str, draft: dict) -> None:
        """Keep the citizen's unfinished message until sent or cancelled."""
        await citizens.save_draft(self._core, channel, address, draft)

    async def delete_draft(self, channel: str, address: str) -> None:
        """Forget the citizen's unfinished message."""
        await citizens.delete_draft(self._core, channel, address)

    async def rate(self, code: str, rating: int, comment: str | None = None, via: str = "web") -> None:
        """Rate a resolved complaint by its tracking code."""
        await satisfaction.rate(self._core, code, rating, comment, via)

    async def scorecard(self) -> list[reports.UnitScorecard]:
        """Each unit's public figures: on-time rate and satisfaction, last 30 and 90 days."""
        return await reports.scorecard(self._core)

    async def delivery_report(self, channel: str, state: DeliveryState, *, reference: str | None = None,
                              external_id: str | None = None, reason: str | None = None) -> bool:
        """Record what a provider reported of one of our messages; False when it is not ours."""
        return await delivery.report(self._core, channel, state, reference=reference, external_id=external_id,
                                     reason=reason)

    # ------------------------------------------------------------------ staff

    async def officer_by_chat(self, chat_id: int) -> Officer | None:
        """The active staff member linked to this Telegram chat, if any."""
        return await staff.by_telegram_chat(self._core, chat_id)

    async def authorise(self, officer: Officer | None, code: str) -> None:
        """Raise NotAllowed unless this officer may act on this complaint."""
        await staff.authorise(self._core, officer, code)

    async def claim(self, officer: Officer | None, code: str) -> None:
        """The officer takes the complaint."""
        await staff.claim(self._core, officer, code)

    async def answer(self, officer: Officer | None, code: str, text: str, source_id: str | None = None,
                     attachments: tuple[Attachment, ...] = ()) -> None:
        """Answer the citizen on their own channel (once per source id), with any files."""
        await staff.reply(self._core, officer, code, text, source_id, attachments)

    async def note(self, officer: Officer | None, code: str, text: str, source_id: str | None = None) -> None:
        """Add an internal note (once per source id)."""
        await staff.note(self._core, officer, code, text, source_id)

    async def resolve(self, officer: Officer | None, code: str, text: str | None = None,
                      source_id: str | None = None, attachments: tuple[Attachment, ...] = ()) -> None:
        """Resolve the complaint, with a last answer and proof of the work if given."""
        await staff.resolve(self._core, officer, code, text, source_id, attachments)

    async def reassign(self, officer: Officer | None, code: str, unit_slug: str, reason: str | None = None,
                       note: str = "") -> None:
        """Pass the complaint to another unit, with a configured reason and free text."""
        await staff.reassign(self._core, officer, code, unit_slug, reason, note)

    async def mine(self, officer: Officer | None) -> list[CaseSummary]:
        """The officer's open complaints, soonest deadline first."""
        return await staff.mine(self._core, officer)

    async def overdue(self, officer: Officer | None) -> list[CaseSummary]:
        """Unanswered complaints past their deadline: the unit's, or all for an admin."""
        return await staff.overdue(self._core, officer)

    async def case(self, officer: Officer | None, code: str) -> Case:
        """The whole case for an officer who may see it."""
        return await staff.case(self._core, officer, code)

    def render_case(self, case: Case, language: str, head: str, budget: int) -> str:
        """A case as text: the head, the location, then as much history as fits the budget."""
        return messages.render(self._core, case, language, head, budget)

    async def attachment(self, officer: Officer | None, attachment_id: int) -> StoredFile:
        """A file of a case the officer may see."""
        return await staff.attachment(self._core, officer, attachment_id)

    async def code_for_message(self, channel: str, external_id: str) -> str | None:
        """The tracking code of the complaint one of our sent messages was about."""
        return await staff.code_for_message(self._core, channel, external_id)

    async def link(self, code: str, telegram_chat_id: int) -> Officer | None:
        """Link a chat to the staff member a valid, unused one-time code was made for."""
        return await staff.link(self._core, code, telegram_chat_id)

    # ------------------------------------------------------------------ operations

    async def healthy(self) -> bool:
        """Whether the store answers."""
        try:
            async with self._core.sessions() as session:
                await session.execute(sql("SELECT 1"))
        except Exception:  # noqa: BLE001 - whatever keeps the store from answering means unhealthy
            return False
        return True

    async def metrics(self) -> bytes:
        """The metrics in Prometheus' text format, the outbox's gauges read from the store."""
        await outbox.refresh_gauges(self._core)
        return self._core.metrics.exposition()

    async def shared_key(self, name: str) -> bytes:
        """A random key made once and kept in the store, the same for every process."""
        return await sync.shared_key(self._core, name)

    async def credential(self, name: str) -> dict | None:
        """A channel's stored credential (an access token pair), if any."""
        return await credentials.read(self._core, name)

    async def store_credential(self, name: str, value: dict) -> None:
        """Keep a channel's credential (the first pair an operator obtained)."""
        await credentials.store(self._core, name, value)

    async def renew_credential(self, name: str, stale: dict | None,
                               renewal: Callable[[dict], Awaitable[dict]]) -> dict:
        """Renew a credential once across processes (see ``bot/credentials.py``)."""
        return await credentials.renew(self._core, name, stale, renewal)

    # ------------------------------------------------------------------ flood control

    async def admit(self, scope: str, client: str, limit: int, window_seconds: float) -> float | None:
        """Count one request of a client (an address, a session, a sender) against its limit, the
        same for every process: None when within it, else the seconds until it may try again."""
        return await self._limiter.admit(scope, client, limit, window_seconds)

    async def admit_all(self, checks: list[tuple[str, str, int]], window_seconds: float) -> float | None:
        """``admit`` for several (scope, client, limit) of one request at once, in one round trip."""
        return await self._limiter.admit_all(checks, window_seconds)

    # ------------------------------------------------------------------ urgency and decisions

    async def ask(self, officer: Officer | None, code: str, question: str, source_id: str | None = None) -> None:
        """Ask the citizen for more; the complaint's clock waits for their answer."""
        await staff.ask(self._core, officer, code, question, source_id)

    async def set_urgency(self, officer: Officer | None, code: str, level: str, reason: str) -> None:
        """Make the complaint urgent, normal or complex, with a reason."""
        await staff.set_urgency(self._core, officer, code, level, reason)

    async def extend(self, officer: Officer | None, code: str, reason: str) -> None:
        """Give a complex complaint more time, once, telling the citizen why."""
        await staff.extend(self._core, officer, code, reason)

    async def reject(self, officer: Officer | None, code: str, reason: str | None, note: str = "") -> None:
        """Close the complaint without acting on it, with a configured reason and free text."""
        await staff.reject(self._core, officer, code, reason, note)

    async def not_fixed(self, code: str, comment: str | None = None, via: str = "web") -> None:
        """The citizen says a resolution did not fix it: the complaint reopens, to the unit head."""
        await satisfaction.not_fixed(self._core, code, comment, via)

    async def public_file(self, code: str, attachment_id: int) -> StoredFile:
        """A file of a public answer (proof of the work done), for whoever holds the code."""
        return await status.public_file(self._core, code, attachment_id)
    # ------------------------------------------------------------------ incidents

    async def incident_merge(self, officer: Officer | None, codes: list[str]) -> IncidentSummary:
        """Merge complaints (and their incidents) into the first one's incident."""
        return await staff.incident_merge(self._core, officer, codes)

    async def incident_split(self, officer: Officer | None, code: str) -> IncidentSummary | None:
        """Take a complaint out of its incident (None when the incident ended)."""
        return await staff.incident_split(self._core, officer, code)

    async def incident_join(self, officer: Officer | None, code: str, candidate: str) -> IncidentSummary:
        """Join a suggested complaint to its candidate's incident."""
        return await staff.incident_join(self._core, officer, code, candidate)

    async def incident_keep(self, officer: Officer | None, code: str, candidate: str) -> None:
        """Keep a suggested complaint separate."""
        await staff.incident_keep(self._core, officer, code, candidate)

    async def incident_of(self, officer: Officer | None, code: str) -> IncidentSummary | None:
        """The incident a complaint is in, if any."""
        return await staff.incident_of(self._core, officer, code)

    # ------------------------------------------------------------------ the staff desk (issue 15)

    async def desk_request_link(self, who: str, client_address: str, policy: SignInPolicy) -> str:
        """Send a one-time sign-in link to the staff member named (slug or e-mail): sent, unknown or limited."""
        return await desk_auth.request_link(self._core, who, client_address, policy)

    async def desk_sign_in(self, token: str, client_address: str, policy: SignInPolicy) -> SignInOutcome:
        """Use a sign-in link once: a new session, or why not."""
        return await desk_auth.sign_in(self._core, token, client_address, policy)

    async def desk_session(self, token: str) -> DeskSession | None:
        """The live session a cookie's token names, if any."""
        return await desk_auth.session_for(self._core, token)

    async def desk_sign_out(self, token: str, client_address: str, everywhere: bool = False) -> None:
        """End this session, or all of its staff member's sessions."""
        await desk_auth.sign_out(self._core, token, client_address, everywhere)

    def desk_queues(self) -> tuple[str, ...]:
        """The queues the desk lists, in order."""
        return desk_queries.QUEUES

    def desk_statuses(self) -> tuple[tuple[str, bool], ...]:
        """Every status name, and whether it is open."""
        return tuple((status.value, status in OPEN) for status in Status)

    async def desk_queue(self, officer: Officer | None, queue: str, filters: Filters, page: int = 0) -> QueuePage:
        """A page of a queue or of search results, only complaints the officer may see, with the counts."""
        return await desk_queries.queue_page(self._core, officer, queue, filters, page)

    async def desk_case(self, officer: Officer | None, code: str, contact_roles: frozenset[str]) -> CaseView:
        """A complaint's page and whole story, for an officer who may see it."""
        return await desk_case.case_view(self._core, officer, code, contact_roles)

    async def reopen(self, officer: Officer | None, code: str, reason: str | None = None) -> None:
        """Open a finished complaint again, with fresh deadlines."""
        await staff.reopen(self._core, officer, code, reason)

    async def desk_dashboard(self, officer: Officer | None, unit_slug: str | None, period: str, language: str):
        """A unit's digest figures for a period (head: own unit; admin: any), its chart, overdue by officer."""
        digest, chart, by_officer = await desk_admin.dashboard(self._core, officer, unit_slug, period, language)
        return digest, chart, by_officer

    def duration(self, seconds: float, language: str) -> str:
        """A span of time as the digest writes it ("2 giờ 15 phút")."""
        return digests.duration(self._core, language, seconds)

    async def desk_staff(self, officer: Officer | None) -> list[StaffLine]:
        """Every staff member (admins only)."""
        return await desk_admin.staff_lines(self._core, officer)

    async def desk_rules(self, officer: Officer | None) -> list:
        """The routing rules in the order they are tried (admins only)."""
        return await desk_admin.rules(self._core, officer)

    async def desk_route_test(self, officer: Officer | None, text: str, area: str | None, category: str | None,
                              channel: str):
        """Which unit a complaint like this would go to, and why (admins only; nothing stored)."""
        return await desk_admin.route_test(self._core, officer, text, area, category, channel)

    async def desk_failed_messages(self, officer: Officer | None) -> list[FailedMessage]:
        """The outbox's failed messages, newest first (admins only)."""
        return await desk_admin.failed_messages(self._core, officer)

    async def desk_retry(self, officer: Officer | None, message_id: int) -> None:
        """Queue a failed message again (admins only)."""
        await desk_admin.retry(self._core, officer, message_id)

    def unit_slug(self, unit_id: int) -> str:
        """A unit's slug."""
        return self._core.directory.unit_slug(unit_id)
