"""The ``[incidents]`` section: when complaints about one event are grouped into an
incident, per category or kind of event (thresholds, time window, distance).

The defaults suit Hà Nội and the labelled set in tests/fixtures/incidents; every key is
documented in config.example.toml.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from bot.incidents.match import TOPICS, Rule
from contract.schema import Problems, Section, Slug


class IncidentRuleConfig(Section):
    """Thresholds, window and distance for one category or kind of event (an override)."""

    category: Slug | None = None
    topic: str | None = None
    join_above: float | None = Field(None, ge=0, le=1)
    suggest_above: float | None = Field(None, ge=0, le=1)
    window_minutes: float | None = Field(None, gt=0)
    distance_m: float | None = Field(None, gt=0)
    group: bool | None = None

    @field_validator("topic")
    @classmethod
    def _known_topic(cls, value: str | None) -> str | None:
        if value is not None and value not in TOPICS:
            raise ValueError(f"unknown kind of event {value[:30]!r}; one of: {', '.join(TOPICS)}")
        return value

    @model_validator(mode="after")
    def _says_something(self) -> IncidentRuleConfig:
        if (self.category is None) == (self.topic is None):
            raise Problems([("", "an override names a category or a topic (one of them)")])
        return self


def _default_incident_rules() -> list[IncidentRuleConfig]:
    # Hà Nội: a power cut or a water cut spans a ward for half a day; a flood a street for
    # a few hours; a pothole, a fallen tree, a fire, a broken light or a party is one spot;
    # uncollected garbage is reported for days; procedures are each citizen's own case.
    spot = dict(distance_m=150.0)
    return [IncidentRuleConfig(topic="flood", window_minutes=360.0, distance_m=800.0),
            IncidentRuleConfig(topic="fire", window_minutes=360.0, distance_m=200.0),
            IncidentRuleConfig(topic="noise", window_minutes=360.0, distance_m=200.0),
            IncidentRuleConfig(topic="pothole", **spot), IncidentRuleConfig(topic="tree", **spot),
            IncidentRuleConfig(topic="traffic_light", **spot),
            IncidentRuleConfig(topic="garbage", window_minutes=4320.0, distance_m=400.0),
            IncidentRuleConfig(topic="procedure", group=False),
            IncidentRuleConfig(category="thu-tuc", group=False)]


class IncidentsConfig(Section):
    """Grouping complaints about one event into an incident (``bot.incidents``)."""

    enabled: bool = True
    join_above: float = Field(0.8, ge=0, le=1)
    suggest_above: float = Field(0.4, ge=0, le=1)
    window_minutes: float = Field(720.0, gt=0)
    ward_distance_m: float = Field(1500.0, gt=0)
    street_distance_m: float = Field(800.0, gt=0)
    spot_distance_m: float = Field(150.0, gt=0)
    overrides: list[IncidentRuleConfig] = Field(default_factory=_default_incident_rules)

    @model_validator(mode="after")
    def _ordered(self) -> IncidentsConfig:
        problems = []
        if self.suggest_above > self.join_above:
            problems.append(("suggest_above", f"({self.suggest_above:g}) must not be above join_above "
                                              f"({self.join_above:g})"))
        seen: dict[tuple, int] = {}
        for i, rule in enumerate(self.overrides):
            scope = (rule.category, rule.topic)
            if scope in seen:
                problems.append((f"overrides[{i}]", f"covers the same {'category' if rule.category else 'topic'} "
                                                    f"as overrides[{seen[scope]}]"))
            seen.setdefault(scope, i)
        if problems:
            raise Problems(problems)
        return self

    def rule(self, topic: str | None, category: str | None) -> Rule:
        """What applies to a complaint: its kind of event's override, else its category's, else the defaults."""
        reach = TOPICS[topic][0] if topic in TOPICS else "ward"
        values = dict(join_above=self.join_above, suggest_above=self.suggest_above, window_minutes=self.window_minutes,
                      distance_m=getattr(self, f"{reach}_distance_m"), group=True)
        for scope in (("category", category), ("topic", topic)):  # the kind of event wins
            for override in self.overrides:
                if scope[1] is not None and getattr(override, scope[0]) == scope[1]:
                    values.update({k: v for k, v in override.model_dump(exclude={"category", "topic"}).items()
                                   if v is not None})
        return Rule(reach=reach, **values)

    @property
    def longest_window_minutes(self) -> float:
        """The longest window any rule has: how far back candidates may lie."""
        return max([self.window_minutes] + [o.window_minutes for o in self.overrides if o.window_minutes])
