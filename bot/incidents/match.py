"""Is a new complaint about the same event as an earlier one? A score and its reasons.

What a complaint says is reduced once, at intake, to ``Features``: the kinds of event it
reports (``topics``: "mất điện", "cúp điện", "cắt điện", "power cut" and "outage" are all
``power``), where it is (``places.Place``), its coordinates, and its words folded and
with SMS abbreviations written out. Two complaints are compared on four things, each
giving part of the score and a reason:

- the event: the same kind scores, different kinds count against;
- the place: named the same (a ward, a street, a landmark, a building) or within the
  distance when both have coordinates scores; named differently (another ward, another
  street for a pothole, another alley number) counts against. How close is close enough
  depends on how far the event reaches (``reach``): a power cut spans a ward, a flood a
  street, a pothole one spot;
- the time: outside the window there is no comparison at all;
- the words: the share of words they have in common.

A complaint joins an incident by itself above ``join_above`` and is put to the officer
between ``suggest_above`` and ``join_above``; both, the window and the distance are set per
category or kind of event in ``[incidents]`` (``bot.settings.IncidentsConfig``).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from functools import cached_property

from bot.incidents.places import Place, expand, parse_words

# Kinds of event and the phrases that report them (folded, abbreviations written out),
# with how far such an event reaches. A phrase may be a regular expression over the
# folded words. Order matters only for ties: the first kind named in a text is its main one.
TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "power": ("ward", (
        "mat dien", "cup dien", "cat dien", "khong co dien", "chua co dien", "co dien lai", "co dien", "bi mat dien",
        "power cut", "power outage", "outage", "no power", "no electricity", "blackout")),
    "water": ("ward", (
        "mat nuoc", "cat nuoc", "ngat nuoc", "nuoc bi ngat", "khong co nuoc", "chua co nuoc", "co nuoc lai",
        "co nuoc", "vo ong", "ong nuoc vo", "ong nuoc bi vo", "ong vo", "nuoc yeu", "ro ri", "duong ong cap nuoc",
        "no water", "water cut", "pipe burst", "water pipe", "water main")),
    "water_quality": ("ward", (
        "nuoc duc", "duc", "nuoc ban", "mui clo", "co can", "nuoc vang", "vang duc", "dirty water")),
    "flood": ("street", ("ngap", "ngap ung", "flood", "flooded", "flooding")),
    "tree": ("spot", (
        "cay do", r"cay(?: \w+){0,5} (?:bi )?do", "do cay", "bat goc", "cay nga", "cay gay", "fallen tree",
        "tree down", "tree fell")),
    "burning": ("ward", ("dot rom", "dot rac", "dot vang ma", "dot rom ra", "burning")),
    "fire": ("spot", (
        "bao chay", "co chay", "chay chung cu", "dam chay", "chay nha", "chay o", "khoi", "khet", "cuu hoa", "pccc",
        "fire alarm", "smoke", "fire")),
    "pothole": ("spot", (
        "o ga", "o voi", "sut lun", "ho sut", "lun", "sut", "pothole", "sinkhole")),
    "garbage": ("street", ("rac", "thu gom", "garbage", "rubbish", "trash")),
    "noise": ("spot", (
        "karaoke", "hat", "nhac to", "mo nhac", "loa", "on ao", "am i", "loud music", "noise")),
    "traffic_light": ("spot", (
        "den tin hieu", "den giao thong", "den do", "den xanh", "den xanh do", "khong co den", "traffic light")),
    "street_light": ("street", ("den duong", "den chieu sang", "street light", "street lights")),
    "sewage": ("spot", (
        "nuoc thai", "cong tac", r"cong(?: \w+){0,5} (?:bi )?tac", "tac cong", "cong tran", "ho ga tran",
        "trao nguoc", "thong tac", "nao vet", "ranh thoat nuoc", "sewage")),
    "dead_fish": ("street", ("ca chet", "dead fish")),
    "spark": ("spot", ("chap dien", "chap", "toe lua", "lua xet", "sparking")),
    "dog": ("spot", ("tha rong", "ro mom", "dog")),
    "parking": ("street", (
        "container", "xe tai do", "do chiem", "do tran", "do chan", "do xe", "parked")),
    "spill": ("street", ("roi vai", "dat da", "dat cat", "spilled")),
    "manhole": ("spot", ("mat nap", "nap ho ga", "nap cong", "manhole")),
    "procedure": ("ward", (
        "thu tuc", "ho so", "so do", "can cuoc", "khai sinh", "tam tru", "chung thuc", "tro cap", "mot cua",
        "residence registration", "vneid")),
}
REACH_DISTANCE = {"ward": 1500.0, "street": 800.0, "spot": 150.0}

# Words too common to say anything about an event.
STOPWORDS = frozenset(
    "a ai anh ba ban bao bi bo ca cac cai can chi cho chua co con cua cung da dang de den di do duoc em gi gio gan "
    "ha hay het hoi hom khi khong khu la lai lam len luc ma may minh moi mot nao nay nha nhe nhieu nhu nhung "
    "noi nua o oi ong qua ra rang rat roi roi sang sao se sau sinh tai the thi thay thuoc tien toi trong tu tren "
    "tu va van vao vay ve vi voi vua xin xong y de nghi kinh gui ubnd phuong quan huyen xa duong pho ngo so "
    "the is a an and are at in of on the to there please it my our this we".split())
# Where a text first names each kind of event: the word at which one of its phrases begins
# as whole words. Most phrases are plain words, looked up by their first word as the words
# go by (one pass for every kind: twenty regular-expression searches over the text, one per
# kind, took 30-60 µs a complaint). A phrase that is a pattern is searched for in the text,
# and only when its first word is there.
_PLAIN = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")


def _index(topics: dict[str, tuple[str, tuple[str, ...]]]) -> tuple[dict, list]:
    """The plain phrases by their first word, and the patterns with theirs (None if a
    pattern does not begin with a plain word: then it is always searched for)."""
    by_first_word: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    patterns: list[tuple[int, str | None, re.Pattern[str]]] = []
    for order, (_, phrases) in enumerate(topics.values()):
        for phrase in phrases:
            if _PLAIN.fullmatch(phrase):
                words = tuple(phrase.split())
                by_first_word.setdefault(words[0], []).append((words, order))
            else:  # "cay(?: \\w+){0,5} (?:bi )?do"
                head = re.match(r"[a-z0-9]+(?= |\(\?: )", phrase)  # a whole word: a space comes next
                patterns.append((order, head and head.group(), re.compile(f"(?:^| )(?:{phrase})(?: |$)")))
    return by_first_word, patterns


_BY_FIRST_WORD, _PATTERNS = _index(TOPICS)
_TOPIC_NAMES = tuple(TOPICS)


def topics_of(words: list[str]) -> tuple[str, ...]:
    """The kinds of event a text reports, the first named first (at the same word, in the
    order of ``TOPICS``)."""
    first: dict[int, int] = {}  # a kind's order: the word where it is first named
    count = len(words)
    for i, word in enumerate(words):
        for phrase, order in _BY_FIRST_WORD.get(word, ()):
            if order not in first and (len(phrase) == 1 or tuple(words[i:i + len(phrase)]) == phrase):
                first[order] = i
    if _PATTERNS:
        present, text = set(words), None
        for order, head, pattern in _PATTERNS:
            if (head is None or head in present) and first.get(order, count) > 0:
                text = " ".join(words) if text is None else text
                found = pattern.search(text)
                if found is not None:
                    # The match starts at the space before its first word (or at 0).
                    at = text.count(" ", 0, found.start() + 1)
                    if at < first.get(order, count):
                        first[order] = at
    return tuple(_TOPIC_NAMES[order] for _, order in sorted((at, order) for order, at in first.items()))


@dataclass(frozen=True)
class Features:
    """What the matcher knows of one complaint, computed once at intake."""

    topics: tuple[str, ...]
    place: Place
    words: frozenset[str]
    latitude: float | None = None
    longitude: float | None = None

    @cached_property
    def topic(self) -> str | None:
        """The main kind of event, if any."""
        return self.topics[0] if self.topics else None

    @cached_property
    def topics_set(self) -> frozenset[str]:
        """The kinds of event, as a set."""
        return frozenset(self.topics)

    @cached_property
    def terms(self) -> frozenset[str]:
        """What the text similarity compares: the words and the kinds of event."""
        return self.words | frozenset(self.topics)

    def to_json(self) -> dict:
        """The features as plain values, for the store."""
        return {"topics": list(self.topics), "place": self.place.to_json(), "words": sorted(self.words)}

    @classmethod
    def from_json(cls, data: dict, latitude: float | None = None, longitude: float | None = None) -> Features:
        """Features stored by ``to_json``. The words are interned: the candidate search keeps
        thousands of decoded features (``candidates.FEATURE_CACHE``), and complaints of one
        storm share most of their words."""
        return cls(tuple(data.get("topics", ())), Place.from_json(data.get("place")),
                   frozenset(map(sys.intern, data.get("words", ()))), latitude, longitude)


def features(text: str, area: str | None = None, subject: str | None = None, latitude: float | None = None,
             longitude: float | None = None) -> Features:
    """Reduce a complaint to what the matcher compares."""
    # Each text is expanded once: the words and the place are read from the same lists.
    subject_words = expand(subject) if subject else []
    text_words = expand(text) if text else []
    words = subject_words + text_words
    return Features(topics_of(words), parse_words(expand(area) if area else [], subject_words, text_words),
                    frozenset(w for w in words if w not in STOPWORDS and not w.isdigit() and len(w) > 1),
                    latitude, longitude)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371000.0 * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Rule:
    """The thresholds, window, distance and reach that apply to one kind of complaint."""

    join_above: float
    suggest_above: float
    window_minutes: float
    distance_m: float
    reach: str
    group: bool = True


# A reason is kept as its pieces and written out only when asked: a format string and its
# values, or a function and its arguments. Intake scores hundreds of candidates a report
# and explains a few; a closure per reason cost more than the scoring itself.
Reason = tuple


def say(reason: Reason) -> str:
    """A reason written out."""
    head, *values = reason
    return head(*values) if callable(head) else head.format(*values)


@dataclass(frozen=True)
class Score:
    """How likely two complaints report the same event, and why (the reasons are written
    out only when asked: intake scores hundreds of candidates and explains a few)."""

    value: float
    why: tuple[Reason, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons, one per part of the score."""
        return tuple(say(reason) for reason in self.why)


def _shared_topics(new: Features, old: Features) -> str:
    return f"event: {new.topic}/{old.topic} share {','.join(sorted(set(new.topics) & set(old.topics)))}"


def _topic_part(new: Features, old: Features) -> tuple[float, Reason]:
    if not new.topics or not old.topics:
        return 0.3, ("event: {} on one side only", new.topic or old.topic or "unknown")
    if new.topic == old.topic:
        return 1.0, ("event: {}", new.topic)
    if not new.topics_set.isdisjoint(old.topics_set):
        return 0.6, (_shared_topics, new, old)
    return -1.0, ("event: {} vs {}", new.topic, old.topic)


def _described(a: Place, b: Place) -> str:
    return f"place: {a.describe()} vs {b.describe()}"


def _named(named: frozenset[str], near: float | None) -> str:
    return f"place: {', '.join(sorted(named))[:60]}" + (f", {near:.0f} m" if near is not None else "")


def _names(template: str, names: frozenset[str]) -> str:
    return template.format(", ".join(sorted(names)))


def _place_part(new: Features, old: Features, rule: Rule) -> tuple[float, Reason]:
    """Strong 1, medium 0.5, weak 0.2, unknown 0, conflict -1; with the reason."""
    a, b = new.place, old.place
    near = None
    if new.latitude is not None and old.latitude is not None and new.longitude is not None \
            and old.longitude is not None:
        near = distance_m(new.latitude, new.longitude, old.latitude, old.longitude)
        if near > 2 * rule.distance_m:
            return -1.0, ("place: {:.0f} m apart", near)
    wards_a, wards_b = a.current, b.current
    if wards_a and wards_b and wards_a.isdisjoint(wards_b):
        return -1.0, (_described, a, b)
    if a.districts and b.districts and a.districts.isdisjoint(b.districts):
        return -1.0, ("place: {} vs {}", min(a.districts), min(b.districts))
    if rule.reach != "ward" and a.streets and b.streets and a.streets.isdisjoint(b.streets):
        return -1.0, ("place: {} vs {}", min(a.streets), min(b.streets))
    if rule.reach == "spot":
        buildings_a, buildings_b = a.buildings, b.buildings
        if buildings_a and buildings_b and buildings_a.isdisjoint(buildings_b):
            return -1.0, ("place: {} vs {}", min(buildings_a), min(buildings_b))
        if a.numbers and b.numbers and a.numbers.isdisjoint(b.numbers):
            return -1.0, ("place: no. {} vs {}", min(a.numbers), min(b.numbers))
    within = near is not None and near <= rule.distance_m
    shared_spots = a.spots & b.spots
    shared_streets = a.streets & b.streets
    shared_old = a.named_or_via & b.named_or_via
    if rule.reach == "ward":
        named = a.old & b.named_or_via or b.old & a.named_or_via or shared_spots or shared_streets
        if named:
            return 1.0, (_named, named, near)
        if within:
            return 0.5, ("place: {:.0f} m", near)
        if shared_old or wards_a & wards_b:
            return 0.5, (_names, "place: {}", shared_old or wards_a & wards_b)
    else:
        if within:
            return 1.0, ("place: {:.0f} m", near)
        if shared_spots:
            return 1.0, (_names, "place: {}", shared_spots)
        if shared_streets:
            if rule.reach == "street" or len(shared_streets) / len(a.streets | b.streets) >= 0.5:
                return 1.0, (_names, "place: {}", shared_streets)
            return 0.5, (_names, "place: {} (junction differs)", shared_streets)
        if shared_old:
            return 0.5, (_names, "place: {}", shared_old)
        if wards_a & wards_b:
            return 0.2, (_names, "place: {}", wards_a & wards_b)
    if a.districts & b.districts:
        return 0.2, ("place: {} (district)", min(a.districts & b.districts))
    if near is not None:
        return 0.0, ("place: {:.0f} m", near)
    return 0.0, ("place: unknown",)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Share of words in common (Jaccard), 0 when either has none."""
    if not a or not b:
        return 0.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


def text_similarity(new: Features, old: Features) -> float:
    """``similarity(new.terms, old.terms)``, without making ``old.terms``: the old complaint's
    words and those of its kinds of event that are not also words. The candidate search
    keeps thousands of old complaints' features (``candidates.FEATURE_CACHE``), and each
    one's terms, a set of its own, was a sixth of what an entry took."""
    terms, words = new.terms, old.words
    if not terms:
        return 0.0
    size, shared = len(words), len(terms & words)
    # Its kinds of event that are not also words, counted in a loop (no set, no generator:
    # this runs for every candidate a search scores). ``topics_of`` names each kind once.
    for topic in old.topics:
        if topic not in words:
            size += 1
            if topic in terms:
                shared += 1
    if not size:
        return 0.0
    return shared / (len(terms) + size - shared)


Parts = tuple  # (value, the event's reason, the place's reason, the text similarity)

# Scores as reported, by their sum before rounding. ``round`` to three places takes about a
# microsecond (it goes through the decimal digits), as long as the rest of a candidate's
# scoring; the sums repeat (the event's and the place's parts take a few values, the text's
# is a ratio of small counts), so each is rounded once. Bounded: emptied when full.
_ROUNDED: dict[float, float] = {}
ROUNDED_LIMIT = 4096


def rounded(value: float) -> float:
    """``round(max(0.0, min(1.0, value)), 3)``, each distinct value worked out once."""
    found = _ROUNDED.get(value)
    if found is None:
        if len(_ROUNDED) >= ROUNDED_LIMIT:
            _ROUNDED.clear()
        found = _ROUNDED[value] = round(max(0.0, min(1.0, value)), 3)
    return found


def parts(new: Features, old: Features, rule: Rule) -> Parts:
    """The score's value and what its reasons are made of (``explained``): intake ranks
    every candidate by the value and explains the best few."""
    topic, topic_reason = _topic_part(new, old)
    place, place_reason = _place_part(new, old, rule)
    text = text_similarity(new, old)
    return rounded(0.4 * topic + 0.4 * place + 0.2 * text), topic_reason, place_reason, text


def explained(scored: Parts, minutes: float) -> Score:
    """The score of ``parts`` with its reasons, the older complaint written ``minutes`` earlier."""
    value, topic_reason, place_reason, text = scored
    return Score(value, (topic_reason, place_reason, ("time: {:.0f} min", minutes), ("text: {:.2f}", text)))


def score(new: Features, old: Features, minutes: float, rule: Rule) -> Score:
    """How likely ``new`` reports the same event as ``old``, written ``minutes`` earlier."""
    return explained(parts(new, old, rule), minutes)
