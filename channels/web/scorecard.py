"""The public scorecard page, ``GET /scorecard``: each unit's on-time rate of first answers
and citizens' satisfaction over the last 30 and 90 days.

Units and figures only, no personal data. The figures come from
the port's scorecard (a channel does no SQL); each computation reads the recent
months of complaints, and the page is public, so one result serves every request for
``CACHE_SECONDS`` in this process: a crowd of readers, or a script, costs one query.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from channels.web.site import SITE, Site, language_of, render

CACHE_SECONDS = 300.0


@dataclass
class ScorecardCache:
    """The last figures computed, when (loop time), and a lock so only one request computes."""

    at: float = float("-inf")
    units: list = field(default_factory=list)  # the port's UnitScorecard values
    made_at: object = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


CACHE = web.AppKey("scorecard_cache", ScorecardCache)


def add_routes(app: web.Application) -> None:
    """Register ``GET /scorecard`` and its cache on the application."""
    app[CACHE] = ScorecardCache()
    app.router.add_get("/scorecard", show_scorecard)


async def _units(app: web.Application) -> ScorecardCache:
    cache, site = app[CACHE], app[SITE]
    async with cache.lock:
        now = asyncio.get_running_loop().time()
        if now - cache.at > CACHE_SECONDS:
            cache.units, cache.made_at, cache.at = await site.port.scorecard(), site.port.clock.now(), now
    return cache


def _cells(site: Site, language: str, unit) -> list[dict]:
    """The unit's figures as the page shows them: on time per window, then satisfaction per window."""
    def t(key: str, **params: object) -> str:
        return site.port.texts.get(language, f"web.{key}", **params)

    def number(value: float) -> str:
        return f"{value:.1f}".replace(".", site.port.texts.get(language, "digest.decimal_point"))

    cells = []
    for days, score in unit.scores.items():
        rate = score.on_time_rate
        cells.append({"measure": "on_time", "days": days, "label": t("scorecard_on_time", days=days),
                      "value": t("scorecard_rate", rate=number(100 * rate), count=score.answered)
                      if rate is not None else t("scorecard_none")})
    for days, score in unit.scores.items():
        cells.append({"measure": "satisfaction", "days": days, "label": t("scorecard_satisfaction", days=days),
                      "value": t("scorecard_rating", average=number(score.rating_average), count=score.ratings)
                      if score.rating_average is not None else t("scorecard_none")})
    for days, score in unit.scores.items():
        rate = score.disputed_rate
        cells.append({"measure": "disputed", "days": days, "label": t("scorecard_disputed", days=days),
                      "value": t("scorecard_disputed_value", rate=number(100 * rate), disputed=score.disputed,
                                 resolved=score.resolutions) if rate is not None else t("scorecard_none")})
    return cells


async def show_scorecard(request: web.Request) -> web.Response:
    """GET /scorecard: each unit's on-time rate and satisfaction, last 30 and 90 days."""
    site = request.app[SITE]
    language = language_of(request, site)
    cache = await _units(request.app)
    units = [{"slug": unit.slug, "name": unit.name_en if language == "en" else unit.name,
              "cells": _cells(site, language, unit)} for unit in cache.units]
    response = render(request, "scorecard.html", language, units=units,
                      updated=site.port.texts.get(language, "web.scorecard_updated",
                                             time=site.port.format_time(cache.made_at, language)))
    response.headers["Cache-Control"] = f"public, max-age={int(CACHE_SECONDS)}"
    return response
