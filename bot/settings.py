"""The domain's part of the configuration: the service, units, staff, categories,
routing and urgency, deadlines, the reasons officers give, waiting for the citizen, the
outbox, digests, satisfaction, notifications and incidents.

Each section is a strict, frozen model (``contract.schema.Section``) whose every key has
the default that ``config.example.toml`` documents; values that need parsing are parsed
here once into typed values (working hours into ``WorkingHours``, crontab schedules into
``Crontab``) that the calendar and the scheduler use as they are. ``Settings`` puts the
sections together and checks the references between them (a staff member's unit, a
rule's categories). The channels' sections live in their packages; the wiring adds them
to make the whole configuration (``service/config.py``).

It is long (near 500 lines) because every domain section is here with its checks, and
the checks across sections (a rule's unit, a staff member's unit) need them all in one
place; each section is short and stands alone.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

import holidays
import phonenumbers
from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from bot.crontab import Crontab, CrontabError
from bot.deadlines import WorkingCalendar, deadline_hours
from bot.incidents.config import IncidentsConfig
from bot.working_hours import WorkingHours, WorkingHoursError
from contract.messages import CHANNELS
from contract.schema import IsoDate, OptionalEmailAddress, Problems, Section, Slug, empty_is_none


class ServiceConfig(Section):
    name: str = Field("Cổng tiếp nhận phản ánh, kiến nghị", min_length=1)
    name_en: str = "Citizens' Feedback Desk"
    timezone: str = "Asia/Ho_Chi_Minh"
    default_language: Literal["vi", "en"] = "vi"
    tracking_prefix: str = "PA"
    phone_region: str = "VN"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Ho_Chi_Minh')") from None
        return value

    @field_validator("tracking_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{1,4}", value):
            raise ValueError(f"must be 1 to 4 capital letters A-Z (e.g. 'PA'), got {value[:20]!r}")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"must be a two-letter region code that phone numbers use (e.g. 'VN'), got {value[:20]!r}")
        return value


class UnitConfig(Section):
    slug: Slug
    name: str = Field(min_length=1)
    name_en: str = ""


class StaffConfig(Section):
    slug: Slug
    name: str = Field(min_length=1)
    unit: Slug
    role: Literal["agent", "head", "admin"] = "agent"
    telegram_chat_id: int | None = None
    email: OptionalEmailAddress = None
    areas: list[str] = []  # wards the officer covers: paged first for an urgent complaint there


class CategoryConfig(Section):
    slug: Slug
    name: str = Field(min_length=1)
    name_en: str = ""
    # Resolving a complaint of this category needs a photo or document the citizen can check.
    proof_required: bool = False


Urgency = Literal["urgent", "normal", "complex"]


class ReasonConfig(Section):
    slug: Slug
    name: str = Field(min_length=1)
    name_en: str = ""
    # What it may be given for: rejecting a complaint, transferring it to another unit.
    actions: list[Literal["reject", "transfer"]] = ["reject", "transfer"]


class RoutingRuleConfig(Section):
    # The unit it sends complaints to; "" for a rule that only sets their urgency.
    unit: Annotated[Slug | None, BeforeValidator(empty_is_none)] = None
    urgency: Urgency | None = None
    keywords: list[str] = []
    areas: list[str] = []
    categories: list[Slug] = []
    channels: list[str] = []

    @model_validator(mode="after")
    def _conditions(self) -> RoutingRuleConfig:
        problems: list[tuple[str, str]] = []
        if not (self.keywords or self.areas or self.categories or self.channels):
            problems.append(("", "a rule needs keywords, areas, categories or channels; one with none never "
                                 "matches (complaints no rule takes go to routing.default_unit)"))
        if self.unit is None and self.urgency is None:
            problems.append(("unit", "a rule needs a unit, an urgency, or both"))
        for key in ("keywords", "areas"):
            for i, word in enumerate(getattr(self, key)):
                # Matching folds text to letters and digits; anything else can never match.
                if not re.search(r"[^\W_]", word):
                    problems.append((f"{key}[{i}]", f"{word[:30]!r} has no letters or digits, so it never matches"))
        for i, channel in enumerate(self.channels):
            if channel not in CHANNELS:
                problems.append((f"channels[{i}]", f"unknown channel {channel[:30]!r}; one of {', '.join(CHANNELS)}"))
        if problems:
            raise Problems(problems)
        return self


def _default_rules() -> list[RoutingRuleConfig]:
    # Hà Nội's rules (Quyết định 1207/QĐ-UBND) make these urgent: handled within 4 hours.
    return [RoutingRuleConfig(urgency="urgent", keywords=["cháy", "hỏa hoạn", "sập", "điện giật", "ngập", "nổ",
                                                          "rò rỉ khí", "đuối nước"])]


class RoutingConfig(Section):
    default_unit: Slug = "tiep-nhan"
    rules: list[RoutingRuleConfig] = Field(default_factory=_default_rules)


class DeadlineOverrideConfig(Section):
    unit: Slug | None = None
    category: Slug | None = None
    first_response_hours: float | None = Field(None, gt=0)
    resolution_hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _says_something(self) -> DeadlineOverrideConfig:
        problems: list[tuple[str, str]] = []
        if self.unit is None and self.category is None:
            problems.append(("", "an override needs a unit, a category or both (the defaults cover everything else)"))
        if self.first_response_hours is None and self.resolution_hours is None:
            problems.append(("", "an override needs first_response_hours, resolution_hours or both"))
        if problems:
            raise Problems(problems)
        return self


def _working_hours(value: Any) -> Any:
    if isinstance(value, WorkingHours):
        return value
    try:
        return WorkingHours.parse(value)
    except WorkingHoursError as error:
        raise Problems([(f"[{i}]" if i is not None else "", message) for i, message in error.problems]) from None


def _ordered(section: Section) -> Section:
    """Refuse a resolution deadline that falls before the first answer's."""
    if section.resolution_hours < section.first_response_hours:
        raise Problems([("resolution_hours", f"({section.resolution_hours:g}) must not be shorter than "
                                             f"first_response_hours ({section.first_response_hours:g})")])
    return section


class UrgentDeadlinesConfig(Section):
    # Counted from receipt. Around the clock: nights, weekends and holidays count too.
    first_response_hours: float = Field(4.0, gt=0)
    resolution_hours: float = Field(4.0, gt=0)
    around_the_clock: bool = True

    _check = model_validator(mode="after")(_ordered)


class ComplexDeadlinesConfig(Section):
    first_response_hours: float = Field(8.0, gt=0)
    resolution_hours: float = Field(240.0, gt=0)
    # A complex complaint's resolution may be extended once by this much, with a reason
    # the citizen is told.
    extension_hours: float = Field(80.0, gt=0)

    _check = model_validator(mode="after")(_ordered)


class DeadlinesConfig(Section):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    first_response_hours: float = Field(8.0, gt=0)
    resolution_hours: float = Field(80.0, gt=0)
    remind_before_hours: float = Field(2.0, ge=0)
    extension_hours: float = Field(8.0, gt=0)
    working_hours: Annotated[WorkingHours, BeforeValidator(_working_hours),
                             PlainSerializer(lambda hours: hours.texts())] = WorkingHours()
    working_days: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    holidays_country: Annotated[str | None, BeforeValidator(empty_is_none)] = "VN"
    extra_days_off: list[IsoDate] = []
    extra_working_days: list[IsoDate] = []
    overrides: list[DeadlineOverrideConfig] = []
    urgent: UrgentDeadlinesConfig = UrgentDeadlinesConfig()
    complex: ComplexDeadlinesConfig = ComplexDeadlinesConfig()

    @field_validator("working_days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists a weekday twice")
        return value

    @field_validator("holidays_country")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        if value is not None and value not in holidays.list_supported_countries():
            raise ValueError(f"{value[:20]!r} is not a country code the holidays package knows (e.g. 'VN'); "
                             "write \"\" for no public holidays")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeadlinesConfig:
        problems: list[tuple[str, str]] = []
        if not self.working_days and not self.extra_working_days:
            problems.append(("working_days", "is empty and there are no extra_working_days: deadlines would never fall"))
        if self.resolution_hours < self.first_response_hours:
            problems.append(("resolution_hours", f"({self.resolution_hours:g}) must not be shorter than "
                                                 f"first_response_hours ({self.first_response_hours:g})"))
        both = sorted(set(self.extra_days_off) & set(self.extra_working_days))
        for day in both:
            problems.append(("extra_working_days", f"{day.isoformat()} is also in extra_days_off"))
        seen: dict[tuple, int] = {}
        for i, override in enumerate(self.overrides):
            first = override.first_response_hours or self.first_response_hours
            resolution = override.resolution_hours or self.resolution_hours
            if resolution < first:
                problems.append((f"overrides[{i}].resolution_hours", f"({resolution:g}, with defaults filled in) must not "
                                                                     f"be shorter than first_response_hours ({first:g})"))
            scope = (override.unit, override.category)
            if scope in seen:
                problems.append((f"overrides[{i}]", f"covers the same unit and category as overrides[{seen[scope]}]"))
            seen.setdefault(scope, i)
        if problems:
            raise Problems(problems)
        return self

    def hours_for(self, unit: str, category: str | None, urgency: str = "normal") -> tuple[float, float]:
        """Hours to the first response and to resolution for a unit, category and urgency:
        an urgent or complex complaint's own, else the overrides' or the defaults."""
        if urgency == "urgent":
            return self.urgent.first_response_hours, self.urgent.resolution_hours
        if urgency == "complex":
            return self.complex.first_response_hours, self.complex.resolution_hours
        return deadline_hours((self.first_response_hours, self.resolution_hours),
                              [(o.unit, o.category, o.first_response_hours, o.resolution_hours)
                               for o in self.overrides], unit, category)

    def calendar(self, timezone: str) -> WorkingCalendar:
        """The working-hours calendar these settings describe."""
        return WorkingCalendar.from_config(
            timezone=timezone, working_hours=self.working_hours, working_days=self.working_days,
            holidays_country=self.holidays_country, extra_days_off=self.extra_days_off,
            extra_working_days=self.extra_working_days)


class OutboxConfig(Section):
    poll_seconds: float = Field(2.0, gt=0)
    batch_size: int = Field(64, ge=1)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(30.0, gt=0)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    send_timeout_seconds: float = Field(30.0, gt=0)
    concurrency: int = Field(4, ge=1, le=64)
    heartbeat_seconds: float = Field(10.0, gt=0)
    takeover_seconds: float = Field(60.0, gt=0)
    worker_name: str = Field("", max_length=100)
    fallback_order: list[str] = ["telegram", "zalo", "zns", "sms", "email"]

    @field_validator("worker_name")
    @classmethod
    def _worker_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", value):
            raise ValueError("must be letters, digits and '_ . : -' (e.g. 'web-1'), or \"\" for host:port")
        return value

    @field_validator("fallback_order")
    @classmethod
    def _channels_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a channel twice")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> OutboxConfig:
        problems = []
        if self.backoff_max_seconds < self.backoff_base_seconds:
            problems.append(("backoff_max_seconds", f"({self.backoff_max_seconds:g}) must not be less than "
                                                    f"backoff_base_seconds ({self.backoff_base_seconds:g})"))
        if self.takeover_seconds < 2 * self.heartbeat_seconds:
            # A process busy for one beat must not have its messages taken over as if dead.
            problems.append(("takeover_seconds", f"({self.takeover_seconds:g}) must be at least twice "
                                                 f"heartbeat_seconds ({self.heartbeat_seconds:g})"))
        if problems:
            raise Problems(problems)
        return self


def _crontab(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return Crontab.parse(value)
    except CrontabError as error:
        raise ValueError(str(error)) from None


def _optional_crontab(value: Any) -> Any:
    return None if value == "" else _crontab(value)


class DigestsConfig(Section):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    # Names, not numbers, for the days: they read the same in every cron dialect.
    schedule: Annotated[Crontab, BeforeValidator(_crontab), PlainSerializer(str)] = Crontab.parse("0 8 * * mon-fri")
    # None ("" in the file) turns the weekly digest off.
    weekly_schedule: Annotated[Crontab | None, BeforeValidator(_optional_crontab),
                               PlainSerializer(lambda schedule: str(schedule or ""))] = Crontab.parse("0 8 * * mon")
    channels: list[Literal["telegram", "email"]] = ["telegram", "email"]

    @field_validator("channels")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a channel twice")
        return value


class SatisfactionConfig(Section):
    survey_window_days: float = Field(7.0, gt=0)
    reopen_on_low_rating: bool = True
    # How long after a resolution the citizen may say it did not fix it ("chưa xong").
    dispute_days: float = Field(7.0, ge=0)


class WaitingConfig(Section):
    # Working hours after asking the citizen for more before they are reminded once, and
    # before the complaint is closed for want of an answer (0: never closed by itself).
    remind_after_hours: float = Field(16.0, gt=0)
    close_after_hours: float = Field(40.0, ge=0)

    @model_validator(mode="after")
    def _reminded_first(self) -> WaitingConfig:
        if self.close_after_hours and self.close_after_hours <= self.remind_after_hours:
            raise Problems([("close_after_hours", f"({self.close_after_hours:g}) must be longer than "
                                                  f"remind_after_hours ({self.remind_after_hours:g}), or 0")])
        return self


class NotificationsConfig(Section):
    # A burst of new complaints (a flood, an outage everyone reports) must not page an officer
    # a hundred times: past burst_after notifications to one officer in a window of
    # burst_window_minutes, the rest are held and summed up in one message at the window's
    # end. 0 sends every one.
    burst_after: int = Field(10, ge=0)
    burst_window_minutes: float = Field(10.0, gt=0, le=1440)
    # Outside working hours, what concerns a normal or complex complaint (new ones,
    # reminders, escalations) waits for the next working morning and goes as one summary;
    # an urgent one pages at once.
    quiet_hours: bool = True


def _default_units() -> list[UnitConfig]:
    return [UnitConfig(slug="tiep-nhan", name="Bộ phận tiếp nhận", name_en="Reception desk")]


def _default_categories() -> list[CategoryConfig]:
    return [
        CategoryConfig(slug="moi-truong", name="Môi trường, vệ sinh", name_en="Environment, sanitation"),
        CategoryConfig(slug="giao-thong", name="Giao thông, đường sá", name_en="Traffic, roads"),
        CategoryConfig(slug="dien-nuoc", name="Điện, nước", name_en="Electricity, water"),
        CategoryConfig(slug="trat-tu", name="Trật tự đô thị", name_en="Public order"),
        CategoryConfig(slug="thu-tuc", name="Thủ tục hành chính", name_en="Administrative procedures"),
        CategoryConfig(slug="khac", name="Khác", name_en="Other"),
    ]


def _default_reasons() -> list[ReasonConfig]:
    return [
        ReasonConfig(slug="sai-tham-quyen", name="Không thuộc thẩm quyền của đơn vị", name_en="Not within our remit"),
        ReasonConfig(slug="trung-lap", name="Trùng với phản ánh đã tiếp nhận", name_en="A duplicate of a complaint "
                     "already received", actions=["reject"]),
        ReasonConfig(slug="thieu-thong-tin", name="Không đủ thông tin để xử lý", name_en="Not enough information to "
                     "act on", actions=["reject"]),
        ReasonConfig(slug="khong-co-co-so", name="Không có cơ sở giải quyết", name_en="No grounds to act on",
                     actions=["reject"]),
        ReasonConfig(slug="dung-don-vi", name="Chuyển đúng đơn vị có thẩm quyền", name_en="Passed to the unit in "
                     "charge", actions=["transfer"]),
    ]


def duplicates(values: list, key: str, what: str) -> list[tuple[str, str]]:
    """A problem for each value used before in the list, naming where it was first."""
    first: dict = {}
    problems = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            problems.append((key.format(i), f"{what} {value!r} is already used by {key.format(first[value]).rsplit('.', 1)[0]}"))
        first.setdefault(value, i)
    return problems


class Settings(Section):
    """The domain's settings; every section has defaults."""

    service: ServiceConfig = ServiceConfig()
    units: list[UnitConfig] = Field(default_factory=_default_units)
    staff: list[StaffConfig] = []
    categories: list[CategoryConfig] = Field(default_factory=_default_categories)
    routing: RoutingConfig = RoutingConfig()
    deadlines: DeadlinesConfig = DeadlinesConfig()
    outbox: OutboxConfig = OutboxConfig()
    digests: DigestsConfig = DigestsConfig()
    satisfaction: SatisfactionConfig = SatisfactionConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    waiting: WaitingConfig = WaitingConfig()
    reasons: list[ReasonConfig] = Field(default_factory=_default_reasons)
    incidents: IncidentsConfig = IncidentsConfig()

    @model_validator(mode="after")
    def _references(self) -> Settings:
        problems = self.reference_problems()
        if problems:
            raise Problems(problems)
        return self

    def reference_problems(self) -> list[tuple[str, str]]:
        """Problems with references between sections (a staff member's unit, a rule's category)."""
        units = {u.slug for u in self.units}
        categories = {c.slug for c in self.categories}
        problems = duplicates([u.slug for u in self.units], "units[{}].slug", "unit")
        problems += duplicates([c.slug for c in self.categories], "categories[{}].slug", "category")
        problems += duplicates([m.slug for m in self.staff], "staff[{}].slug", "staff slug")
        # One chat, one officer: the bot tells who gives a command by the chat it comes from.
        problems += duplicates([m.telegram_chat_id for m in self.staff], "staff[{}].telegram_chat_id", "chat id")
        if self.routing.default_unit not in units:
            problems.append(("routing.default_unit", f"no unit {self.routing.default_unit!r} in [[units]]"))
        for i, member in enumerate(self.staff):
            if member.unit not in units:
                problems.append((f"staff[{i}].unit", f"no unit {member.unit!r} in [[units]]"))
        problems += duplicates([r.slug for r in self.reasons], "reasons[{}].slug", "reason")
        for i, rule in enumerate(self.routing.rules):
            if rule.unit is not None and rule.unit not in units:
                problems.append((f"routing.rules[{i}].unit", f"no unit {rule.unit!r} in [[units]]"))
            for j, category in enumerate(rule.categories):
                if category not in categories:
                    problems.append((f"routing.rules[{i}].categories[{j}]", f"no category {category!r} in [[categories]]"))
        for i, override in enumerate(self.deadlines.overrides):
            if override.unit is not None and override.unit not in units:
                problems.append((f"deadlines.overrides[{i}].unit", f"no unit {override.unit!r} in [[units]]"))
            if override.category is not None and override.category not in categories:
                problems.append((f"deadlines.overrides[{i}].category", f"no category {override.category!r} in [[categories]]"))
        # The built-in overrides name built-in categories: with categories of one's own, one
        # that names a category not configured never applies, and is no mistake of theirs.
        written = "overrides" in self.incidents.model_fields_set
        for i, rule in enumerate(self.incidents.overrides):
            if written and rule.category is not None and rule.category not in categories:
                problems.append((f"incidents.overrides[{i}].category", f"no category {rule.category!r} in [[categories]]"))
        return problems

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The service's time zone, for showing times and for working hours."""
        return zoneinfo.ZoneInfo(self.service.timezone)

    def unit(self, slug: str) -> UnitConfig | None:
        """The configured unit with this slug, if any."""
        return next((u for u in self.units if u.slug == slug), None)

    def category(self, slug: str) -> CategoryConfig | None:
        """The configured complaint category with this slug, if any."""
        return next((c for c in self.categories if c.slug == slug), None)

    def reason(self, slug: str, action: str) -> ReasonConfig | None:
        """The configured reason with this slug, if it may be given for this action."""
        return next((r for r in self.reasons if r.slug == slug and action in r.actions), None)
