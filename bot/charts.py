"""The digest's chart: complaints new and resolved each day against the on-time rate, as a PNG.

Drawn with Pillow's ``ImageDraw`` on an 800 x 450 canvas: two bars a day (new, resolved)
on a count axis at the left, the on-time rate (%) as a line with dots on an axis at the
right, every third day's date below, the legend in a row under the plot and the title
above. It used to be drawn with matplotlib, which took 0.2-0.4 s for this one small
chart (most of it setting up the figure, its ticks and the tight layout), more than the
digest's SQL over a million complaints; Pillow draws it in about 10 ms (bench/README.md,
``digest.py``).

The text is DejaVu Sans (it has Vietnamese's letters), the copy matplotlib ships; found by
path, matplotlib is not imported. Pillow's fonts are not safe to share between threads,
and the scheduler draws in a worker thread: one lock around each drawing.
"""

from __future__ import annotations

import importlib.util
import io
import math
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.stats import Day

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 4.5, 100
SIZE = (round(WIDTH_INCHES * DPI), round(HEIGHT_INCHES * DPI))  # pixels: 800 x 450
NEW_COLOUR, RESOLVED_COLOUR, ON_TIME_COLOUR = "#1f5fa8", "#2e8b57", "#c0392b"
TEXT_COLOUR, AXIS_COLOUR, GRID_COLOUR = "#222222", "#333333", "#e6e6e6"
# The plot's box in pixels: room left for the counts and their label, right for the
# percentages, above for the title, below for the dates and the legend.
LEFT, RIGHT, TOP, BOTTOM = 72, SIZE[0] - 56, 36, SIZE[1] - 74
TICK = 4
FONT_SIZE, TITLE_SIZE = 12, 14

_lock = threading.Lock()


@dataclass(frozen=True)
class ChartLabels:
    """The words on the chart, in the reader's language."""

    title: str
    new: str
    resolved: str
    on_time: str
    count: str


def _font_path() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


@cache
def _font(size: int):
    from PIL import ImageFont

    path = _font_path()
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size)


def nice_ticks(top: float, most: int = 6) -> list[int]:
    """Whole-number ticks from 0 past ``top``, at most ``most`` + 1 of them, a step of 1, 2, 2.5
    (not below 10) or 5 times a power of ten."""
    if top <= 0:
        return [0, 1]
    raw = top / most
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next((m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and float(m * power).is_integer()),
                10 * power)
    step = int(step)
    return list(range(0, int(math.ceil(top / step)) * step + 1, step))


def digest_chart(days: list[Day], labels: ChartLabels, timezone: ZoneInfo) -> bytes:
    """Bars of new and resolved complaints per day, a line of the on-time rate (%); PNG bytes."""
    with _lock:
        return _draw(days, labels, timezone)


def _draw(days: list[Day], labels: ChartLabels, timezone: ZoneInfo) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    n = max(1, len(days))
    width, height = RIGHT - LEFT, BOTTOM - TOP

    def x_at(position: float) -> float:  # the days from -0.6 to n - 0.4, as matplotlib had them
        return LEFT + (position + 0.6) / (n + 0.2) * width

    counts = nice_ticks(max([d.new for d in days] + [d.resolved for d in days] + [0]) * 1.05)
    count_top = counts[-1]

    def y_count(value: float) -> float:
        return BOTTOM - value / count_top * height

    def y_rate(percent: float) -> float:  # 0 to 105 %
        return BOTTOM - percent / 105 * height

    # Grid and the count axis (left).
    for value in counts:
        y = round(y_count(value))
        if 0 < value:
            draw.line([(LEFT + 1, y), (RIGHT - 1, y)], fill=GRID_COLOUR)
        draw.line([(LEFT - TICK, y), (LEFT, y)], fill=AXIS_COLOUR)
        draw.text((LEFT - TICK - 3, y), str(value), font=font, fill=TEXT_COLOUR, anchor="rm")
    # The rate axis (right): 0 to 100 %.
    for percent in range(0, 101, 20):
        y = round(y_rate(percent))
        draw.line([(RIGHT, y), (RIGHT + TICK, y)], fill=AXIS_COLOUR)
        draw.text((RIGHT + TICK + 3, y), str(percent), font=font, fill=TEXT_COLOUR, anchor="lm")

    # Bars: new at the day's left, resolved at its right.
    half = 0.4 / (n + 0.2) * width
    for x, day in enumerate(days):
        for offset, value, colour in ((-0.2, day.new, NEW_COLOUR), (0.2, day.resolved, RESOLVED_COLOUR)):
            if value > 0:
                centre = x_at(x + offset)
                draw.rectangle([round(centre - half / 2), round(y_count(value)), round(centre + half / 2) - 1,
                                BOTTOM - 1], fill=colour)

    # The on-time rate, where a day had answers.
    points = [(x_at(x), y_rate(d.on_time_rate * 100)) for x, d in enumerate(days) if d.on_time_rate is not None]
    if len(points) > 1:
        draw.line(points, fill=ON_TIME_COLOUR, width=2, joint="curve")
    for px, py in points:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=ON_TIME_COLOUR)

    draw.rectangle([LEFT, TOP, RIGHT, BOTTOM], outline=AXIS_COLOUR)

    # Every few days, counted back from the last, so the period's own day is labelled.
    positions = list(range(len(days)))
    for x in positions[::-1][::max(1, len(days) // 10)][::-1]:
        px = round(x_at(x))
        draw.line([(px, BOTTOM), (px, BOTTOM + TICK)], fill=AXIS_COLOUR)
        draw.text((px, BOTTOM + TICK + 2), days[x].start.astimezone(timezone).strftime("%d/%m"), font=font,
                  fill=TEXT_COLOUR, anchor="mt")

    # Axis labels: the count's turned up the left side, "%" at the right.
    left, top, right, bottom = draw.textbbox((0, 0), labels.count, font=font)
    label = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(label).text((1 - left, 1 - top), labels.count, font=font, fill=TEXT_COLOUR)
    label = label.rotate(90, expand=True)
    image.paste(label, (10, round(TOP + height / 2 - label.height / 2)))
    draw.text((SIZE[0] - 10, TOP + height / 2), "%", font=font, fill=TEXT_COLOUR, anchor="rm")

    # Legend below the plot, in a row: over it, it would hide a month of bars.
    entries = [(labels.new, NEW_COLOUR, "bar"), (labels.resolved, RESOLVED_COLOUR, "bar"),
               (labels.on_time, ON_TIME_COLOUR, "line")]
    swatch, gap, spacing = 18, 6, 24
    widths = [swatch + gap + draw.textlength(text, font=font) for text, _, _ in entries]
    x = (LEFT + RIGHT) / 2 - (sum(widths) + spacing * (len(entries) - 1)) / 2
    y = SIZE[1] - 22
    for (text, colour, kind), entry_width in zip(entries, widths):
        if kind == "bar":
            draw.rectangle([round(x), y - 5, round(x) + swatch - 1, y + 5], fill=colour)
        else:
            draw.line([(round(x), y), (round(x) + swatch, y)], fill=colour, width=2)
            draw.ellipse([round(x) + swatch / 2 - 3, y - 3, round(x) + swatch / 2 + 3, y + 3], fill=colour)
        draw.text((x + swatch + gap, y), text, font=font, fill=TEXT_COLOUR, anchor="lm")
        x += entry_width + spacing

    draw.text(((LEFT + RIGHT) / 2, TOP / 2), labels.title, font=title_font, fill=TEXT_COLOUR, anchor="mm")
    out = io.BytesIO()
    # Fast zlib level: the image is mostly flat colour, a few kB either way.
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()
