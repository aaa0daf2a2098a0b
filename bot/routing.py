"""Which unit is responsible for a complaint, and why.

Rules come from the configuration (synced into the database on start) and from the
database (added by admins with ``feedback-intake rules add``). They are tried in
priority order; the first that matches decides, and otherwise the default unit takes
the complaint for triage. Every decision carries its reason, recorded on the complaint.

Keywords and areas are matched the way Vietnamese is typed on phones: case, diacritics
and spacing are ignored ("MẤT ĐIỆN", "mat  dien" and "mất điện" are the same), "đ"
folds to "d", and only whole words match, so a rule for "điện" does not fire inside a
longer, unrelated word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.folding import contains_phrase, fold
from storage.models import RoutingRule, Unit

__all__ = ["Decision", "Rule", "RuleError", "add_rule", "contains_phrase", "fold", "load_rules", "remove_rule", "route",
           "rules_from_config"]

@dataclass(frozen=True)
class Rule:
    """A routing rule: every criterion given must match; within one, any value will do."""

    unit: str | None  # None: a rule that only sets urgency
    keywords: tuple[str, ...] = ()
    areas: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    priority: int = 100
    name: str = ""  # how the reason names it: "config rule 2", "db rule 17"
    urgency: str | None = None

    def match(self, text: str, area: str, category: str | None, channel: str) -> str | None:
        """Why this rule matches (a short reason), or None when it does not."""
        reasons = []
        if self.categories:
            if category not in self.categories:
                return None
            reasons.append(f"category {category}")
        if self.channels:
            if channel not in self.channels:
                return None
            reasons.append(f"channel {channel}")
        if self.keywords:
            keyword = next((k for k in self.keywords if contains_phrase(text, fold(k))), None)
            if keyword is None:
                return None
            reasons.append(f"keyword '{keyword}'")
        if self.areas:
            place = next((a for a in self.areas if contains_phrase(area, fold(a)) or contains_phrase(text, fold(a))),
                         None)
            if place is None:
                return None
            reasons.append(f"area '{place}'")
        return ", ".join(reasons) if reasons else None


@dataclass(frozen=True)
class Decision:
    """The unit chosen for a complaint and the reason; its urgency and the reason for it."""

    unit: str
    reason: str
    rule: str | None = None
    urgency: str = "normal"
    urgency_reason: str | None = None


def route(rules: Sequence[Rule], default_unit: str, *, text: str, area: str | None = None,
          category: str | None = None, channel: str = "web", subject: str | None = None) -> Decision:
    """Choose the unit for a complaint (the first matching rule by priority that names a
    unit, else the default) and its urgency (the first matching rule that sets one)."""
    folded_text = fold(f"{subject or ''} {text}")
    folded_area = fold(area or "")
    unit, urgency = None, None
    for rule in sorted(rules, key=lambda r: r.priority):
        if (unit is not None or rule.unit is None) and (urgency is not None or rule.urgency is None):
            continue
        why = rule.match(folded_text, folded_area, category, channel)
        if not why:
            continue
        if unit is None and rule.unit is not None:
            unit = (rule.unit, f"{rule.name or 'rule'}: {why}", rule.name or None)
        if urgency is None and rule.urgency is not None:
            urgency = (rule.urgency, f"{rule.name or 'rule'}: {why}")
        if unit is not None and urgency is not None:
            break
    chosen = unit or (default_unit, "default unit (no rule matched)", None)
    return Decision(*chosen, *(urgency or ("normal", None)))


def rules_from_config(configured: Iterable) -> list[Rule]:
    """Rules from ``[[routing.rules]]``, in file order (priority 10, 20, ...)."""
    return [
        Rule(unit=r.unit, keywords=tuple(r.keywords), areas=tuple(r.areas), categories=tuple(r.categories),
             channels=tuple(r.channels), priority=(i + 1) * 10, name=f"config rule {i + 1}", urgency=r.urgency)
        for i, r in enumerate(configured)
    ]


async def load_rules(session: AsyncSession) -> list[Rule]:
    """All routing rules in the store (from config and from admins), with their unit slugs."""
    rows = (await session.execute(
        select(RoutingRule, Unit.slug).outerjoin(Unit, Unit.id == RoutingRule.unit_id)
        .where(or_(RoutingRule.unit_id.is_(None), Unit.active.is_(True)))
        .order_by(RoutingRule.priority, RoutingRule.id))).all()
    return [Rule(unit=slug, keywords=tuple(r.keywords), areas=tuple(r.areas), categories=tuple(r.categories),
                 channels=tuple(r.channels), priority=r.priority, urgency=r.urgency,
                 name=f"config rule {r.priority // 10}" if r.source == "config" else f"db rule {r.id}")
            for r, slug in rows]


class RuleError(ValueError):
    """A routing rule that cannot be added or removed; says why."""


async def add_rule(session: AsyncSession, *, unit: str | None, keywords: Sequence[str] = (), areas: Sequence[str] = (),
                   categories: Sequence[str] = (), channels: Sequence[str] = (), priority: int = 1000,
                   urgency: str | None = None) -> int:
    """Add an admin's rule to the store; return its id."""
    if not (keywords or areas or categories or channels):
        raise RuleError("a rule needs at least one of keywords, areas, categories, channels")
    if any(not fold(k) for k in (*keywords, *areas)):
        raise RuleError("keywords and areas need letters or digits")
    if unit is None and urgency is None:
        raise RuleError("a rule needs a unit, an urgency, or both")
    unit_id = None
    if unit is not None:
        unit_id = await session.scalar(select(Unit.id).where(Unit.slug == unit, Unit.active.is_(True)))
        if unit_id is None:
            raise RuleError(f"no unit {unit!r}")
    rule = RoutingRule(unit_id=unit_id, priority=priority, source="db", keywords=list(keywords), areas=list(areas),
                       categories=list(categories), channels=list(channels), urgency=urgency)
    session.add(rule)
    await session.flush()
    return rule.id


async def remove_rule(session: AsyncSession, rule_id: int) -> None:
    """Remove an admin's rule (config rules change only in the config file)."""
    rule = await session.get(RoutingRule, rule_id)
    if rule is None or rule.source != "db":
        raise RuleError(f"no admin rule {rule_id} (rules from the config file are changed there)")
    await session.delete(rule)
