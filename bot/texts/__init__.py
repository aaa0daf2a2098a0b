"""The message catalogue: every text the service sends or shows, in Vietnamese and English.

One TOML file per language beside this module. Vietnamese is complete by definition;
another language falls back to Vietnamese for a key it lacks, and the tests check that
each language has every key with the same parameters.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

LANGUAGES = ("vi", "en")
_FOLDER = Path(__file__).parent


def _flatten(table: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def placeholders(template: str) -> set[str]:
    """The parameter names a template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Catalogue:
    """Texts by language and dotted key (``citizen.acknowledgement``)."""

    def __init__(self, default_language: str = "vi", folder: Path = _FOLDER):
        self.default_language = default_language
        self.texts = {
            language: _flatten(tomllib.loads((folder / f"{language}.toml").read_text(encoding="utf-8")))
            for language in LANGUAGES
        }
        self._tables: dict[tuple[str, str], Mapping[str, str]] = {}

    def language(self, requested: str | None) -> str:
        """The supported language closest to what was asked for (``en-US`` -> ``en``)."""
        if requested:
            primary = requested.strip().lower().replace("_", "-").split("-")[0]
            if primary in self.texts:
                return primary
        return self.default_language

    def get(self, language: str | None, key: str, **params: object) -> str:
        """The text for key in language, with its parameters filled in."""
        texts = self.texts.get(self.language(language), {})
        template = texts.get(key) or self.texts["vi"][key]
        return template.format(**params) if params else template

    def table(self, language: str | None, prefix: str) -> Mapping[str, str]:
        """All texts under a prefix (``web.``), keyed without it, for templates: made once per
        language and prefix, and read-only, as it is shared. Every page rendered asks for one;
        building it walked the whole catalogue (with the two error pages each form post
        rendered in case, 7 % of the form's CPU in a storm)."""
        language = self.language(language)
        if (found := self._tables.get((language, prefix))) is None:
            base = {k[len(prefix):]: v for k, v in self.texts["vi"].items() if k.startswith(prefix)}
            base.update({k[len(prefix):]: v for k, v in self.texts[language].items() if k.startswith(prefix)})
            found = self._tables[language, prefix] = MappingProxyType(base)
        return found
