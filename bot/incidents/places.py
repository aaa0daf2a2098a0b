"""Where a complaint is, as citizens write it: wards and districts (before and after Hà
Nội's July 2025 merger), streets, landmarks, building codes and house or alley numbers.

"P. Nghĩa Tân", "phuong nghia tan", "Nghĩa Tân, Cầu Giấy" and "phường Nghĩa Đô (Nghĩa
Tân cũ)" are one place: names are folded (``bot.folding``), the markers that say what a
name is ("P."/"phường", "Q."/"quận", "H."/"huyện", "TT", "xã", "ngõ", "đường", ...) are read
and dropped, and a small gazetteer shipped with the package (``hanoi.json``) says which
old ward went to which new ward, which district it was in, and which wards a street or a
landmark lies in. A name that is missing from the gazetteer makes a place unknown, never a
wrong one. ``Place`` is what the matcher compares; ``Place.key`` is the coarse key the
store indexes candidates by.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources

from bot.folding import fold

# Words that say what the next name is; dropped from the name itself.
WARD_MARKERS = {"phuong", "p", "xa", "tt", "thi tran", "ward"}
DISTRICT_MARKERS = {"quan", "q", "huyen", "h", "district"}
STREET_MARKERS = {"duong", "pho", "ngo", "ngach", "hem", "kiet", "dg", "nut", "nga tu", "tuyen", "street", "road",
                  "chan cau vuot", "dau ngo"}
NUMBER_MARKERS = {"ngo", "ngach", "hem", "kiet", "so", "so nha", "nha so"}
# A building in a housing area: HH2B, HH4A, C4, B3, 17T (not a time such as 8h30).
BUILDING = re.compile(r"^(?:hh\d{1,3}[a-z]?|[a-gk-z]\d{1,2}[a-z]?|\d{1,3}t\d?)$")
NUMBER = re.compile(r"^\d{1,4}$")


@dataclass(frozen=True)
class Place:
    """What a complaint says about where it is; every name as a folded key."""

    old: frozenset[str] = frozenset()  # wards before the merger, named
    current: frozenset[str] = frozenset()  # wards since the merger: named, or those of the old wards (named or via)
    via: frozenset[str] = frozenset()  # old wards reached through a street or a landmark
    districts: frozenset[str] = frozenset()  # districts before the merger: named, or of the wards
    streets: frozenset[str] = frozenset()
    spots: frozenset[str] = frozenset()  # landmarks and buildings
    numbers: frozenset[str] = frozenset()  # house and alley numbers
    # The district of the first place named (the area field first): the index key, so
    # that a street crossing into another district does not move a report's key.
    first_district: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing at all is known of the place."""
        return not (self.old or self.current or self.via or self.districts or self.streets or self.spots)

    @cached_property
    def buildings(self) -> frozenset[str]:
        """The buildings among the spots (a code with a number: HH2B, C4)."""
        return frozenset(s for s in self.spots if any(ch.isdigit() for ch in s))

    @cached_property
    def named_or_via(self) -> frozenset[str]:
        """Old wards named or reached through a street or landmark."""
        return self.old | self.via

    @property
    def key(self) -> str | None:
        """The coarse key candidates are indexed by: a district, else a new ward, street or spot."""
        if self.first_district:
            return f"d:{self.first_district}"[:64]
        for values, prefix in ((self.districts, "d"), (self.current, "w"), (self.streets, "s"), (self.spots, "b")):
            if values:
                return f"{prefix}:{min(values)}"[:64]
        return None

    def to_json(self) -> dict[str, list[str]]:
        """The place as plain lists, for the store."""
        out: dict = {name: sorted(getattr(self, name)) for name in FIELDS if getattr(self, name)}
        if self.first_district:
            out["first_district"] = self.first_district
        return out

    @classmethod
    def from_json(cls, data: dict | None) -> Place:
        """A place stored by ``to_json``."""
        data = data or {}
        # Names interned and empty fields one shared set: the candidate search keeps thousands
        # of decoded places (bot/incidents/candidates.py), each empty set 216 bytes of its own.
        return cls(**{name: frozenset(map(sys.intern, values)) if (values := data.get(name)) else _NONE
                      for name in FIELDS}, first_district=data.get("first_district"))

    def describe(self) -> str:
        """A short human description of the most specific names, for reasons and CLI output."""
        names = sorted(self.spots)[:2] + sorted(self.streets)[:2] + sorted(self.old or self.via)[:2]
        return ", ".join(names) or ", ".join(sorted(self.current)[:2] or sorted(self.districts)[:2]) or "-"


FIELDS = ("old", "current", "via", "districts", "streets", "spots", "numbers")
_NONE: frozenset[str] = frozenset()


@dataclass
class _Entry:
    kinds: dict[str, object] = field(default_factory=dict)  # kind -> payload


@dataclass(frozen=True)
class Gazetteer:
    """Names by folded phrase, and what each old ward maps to."""

    names: dict[tuple[str, ...], dict[str, object]]
    ward_new: dict[str, frozenset[str]]
    ward_district: dict[str, str]
    # The words a name starts with, each with the length of the longest name it starts:
    # most words of a complaint start none, and are passed over with one lookup.
    starts: dict[str, int] = field(default_factory=dict)


@cache
def gazetteer() -> Gazetteer:
    """The gazetteer shipped with the package, loaded once per process."""
    data = json.loads(resources.files("bot.incidents").joinpath("hanoi.json").read_text(encoding="utf-8"))
    names: dict[tuple[str, ...], dict[str, object]] = {}

    def add(name: str, kind: str, payload: object) -> None:
        words = tuple(expand(name))
        if words:
            names.setdefault(words, {})[kind] = payload

    ward_new, ward_district = {}, {}
    for district in data["districts"]:
        add(district, "district", fold(district))
    for ward in data["new_wards"]:
        add(ward, "current", fold(ward))
    for ward in data["wards"]:
        key = fold(ward["name"])
        ward_new[key] = frozenset(fold(n) for n in ward["to"])
        ward_district[key] = fold(ward["district"])
        for name in [ward["name"], *ward.get("aliases", [])]:
            add(name, "old", key)
    for street in data["streets"]:
        payload = (fold(street["name"]), tuple(fold(w) for w in street["wards"]))
        for name in [street["name"], *street.get("aliases", [])]:
            add(name, "street", payload)
    for landmark in data["landmarks"]:
        payload = (fold(landmark["name"]), tuple(fold(w) for w in landmark["wards"]))
        for name in [landmark["name"], *landmark.get("aliases", [])]:
            add(name, "spot", payload)
    starts: dict[str, int] = {}
    for words in names:
        starts[words[0]] = max(starts.get(words[0], 0), len(words))
    return Gazetteer(names, ward_new, ward_district, starts)


# How citizens shorten words by SMS; applied word by word after folding.
ABBREVIATIONS = {
    "ko": "khong", "k": "khong", "hok": "khong", "hong": "khong", "kh": "khong", "khg": "khong", "kg": "khong",
    "dc": "duoc", "dk": "duoc", "j": "gi", "ng": "nguoi", "r": "roi", "mn": "moi nguoi", "cty": "cong ty",
    "tp": "thanh pho", "kdt": "khu do thi", "dt": "dien thoai", "sdt": "so dien thoai", "bt": "binh thuong",
    "vs": "voi", "ntn": "nhu the nao", "bh": "bao gio", "bgio": "bao gio", "nc": "nuoc", "cup": "cup",
}
_STRETCH = re.compile(r"([a-z])\1{2,}|([b-df-hj-np-tv-z])\2")


def _unstretch(word: str) -> str:
    # "dienn", "voiii", "hoooo": a letter typed three times or more, or a consonant typed
    # twice, is one letter (Vietnamese doubles no consonant; "cứu" and "xoong" keep theirs).
    return _STRETCH.sub(lambda m: m.group(1) or m.group(2), word)


# What each abbreviation is written out as, as words.
_EXPANDED = {short: tuple(long.split()) for short, long in ABBREVIATIONS.items()}


def expand(text: str) -> list[str]:
    """Folded words with stretched letters undone and SMS abbreviations written out."""
    folded = fold(text)
    words = folded.split()
    # A stretch never runs across a space: a text with none anywhere has none in a word
    # (most texts), and its words are not looked at one by one for one.
    if _STRETCH.search(folded) is not None:
        words = [word if any(ch.isdigit() for ch in word) else _unstretch(word) for word in words]
    out: list[str] = []
    for word in words:
        long = _EXPANDED.get(word)
        if long is None:
            out.append(word)
        else:
            out.extend(long)
    return out


def _marker_before(words: list[str], start: int) -> str | None:
    """The marker word(s) just before a name, skipping house and alley numbers."""
    i = start
    while i > 0 and NUMBER.match(words[i - 1]):
        i -= 1
    for size in (3, 2, 1):
        if i - size >= 0:
            phrase = " ".join(words[i - size:i])
            if phrase in WARD_MARKERS or phrase in DISTRICT_MARKERS or phrase in STREET_MARKERS:
                return phrase
    return None


def _marker_after(words: list[str], end: int) -> str | None:
    # English puts it after: "Bo De ward", "Lang road", "Xuan Dieu street".
    if end < len(words) and words[end] in ("ward", "district", "street", "road"):
        return words[end]
    return None


def parse(*texts: str | None) -> Place:
    """The place named in an area field and a text (either may be None)."""
    return parse_words(*(expand(text) for text in texts if text))


def parse_words(*texts: list[str]) -> Place:
    """``parse`` of texts already ``expand``ed (a name never runs from one text into the next)."""
    g = gazetteer()
    starts = g.starts
    old: set[str] = set()
    current: set[str] = set()
    via: set[str] = set()
    districts: set[str] = set()
    first: str | None = None
    streets: set[str] = set()
    spots: set[str] = set()
    numbers: set[str] = set()
    names = g.names
    for words in texts:
        i, count = 0, len(words)
        while i < count:
            word = words[i]
            match = None
            if longest := starts.get(word):
                for size in range(min(longest, count - i), 0, -1):
                    kinds = names.get(tuple(words[i:i + size]))
                    if kinds:
                        match = (size, kinds)
                        break
            if match is None:
                # A building and a number each hold a digit: a word of letters alone is neither.
                if not word.isalpha():
                    if BUILDING.match(word):
                        spots.add(word)
                    if NUMBER.match(word) and i > 0 and (words[i - 1] in NUMBER_MARKERS
                                                         or " ".join(words[max(0, i - 2):i]) in NUMBER_MARKERS):
                        numbers.add(word)
                i += 1
                continue
            size, kinds = match
            marker = _marker_before(words, i) or _marker_after(words, i + size)
            if marker is not None and NUMBER.match(words[i - 1] if i else "") and "street" in kinds:
                numbers.add(words[i - 1])
            elif i and NUMBER.match(words[i - 1]) and "street" in kinds:
                numbers.add(words[i - 1])  # "18 Hoàng Quốc Việt"
            _resolve(kinds, marker, old, current, via, districts, streets, spots)
            if first is None:
                first = next((d for d in sorted(districts)), None) or next(
                    (g.ward_district[w] for w in sorted(old | via) if w in g.ward_district), None)
            i += size
    for ward in old | via:
        current |= g.ward_new.get(ward, frozenset())
        if ward in g.ward_district:
            districts.add(g.ward_district[ward])
    return Place(frozenset(old), frozenset(current), frozenset(via - old), frozenset(districts), frozenset(streets),
                 frozenset(spots), frozenset(numbers), first)


def _resolve(kinds: dict[str, object], marker: str | None, old: set, current: set, via: set, districts: set,
             streets: set, spots: set) -> None:
    """Put one name where its marker (or, without one, its likeliest meaning) says."""

    def street() -> None:
        name, wards = kinds["street"]
        streets.add(name)
        via.update(wards)

    if marker in STREET_MARKERS and "street" in kinds:
        street()
        return
    if marker in DISTRICT_MARKERS and "district" in kinds:
        districts.add(kinds["district"])
        return
    if marker in WARD_MARKERS and ("old" in kinds or "current" in kinds):
        if "old" in kinds:
            old.add(kinds["old"])
        else:
            current.add(kinds["current"])
        return
    if "spot" in kinds:
        name, wards = kinds["spot"]
        spots.add(name)
        via.update(wards)
        return
    if "old" in kinds:
        old.add(kinds["old"])
        if "street" in kinds:
            street()
        return
    if "street" in kinds and "district" not in kinds:
        street()
        return
    if "district" in kinds:
        # "Cầu Giấy" alone is the old district far more often than the new ward or the street.
        districts.add(kinds["district"])
        return
    if "current" in kinds and marker is not None:
        current.add(kinds["current"])
