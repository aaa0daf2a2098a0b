"""The digest's chart: complaints new and resolved each day against the on-time rate, as a PNG.

Drawn with matplotlib's object API on the Agg canvas, never through pyplot: pyplot keeps
global figures and picks a GUI backend, and the scheduler draws in a worker thread.
matplotlib is imported on first use, so processes that never draw a chart (web, CLI
commands other than ``digest``) do not pay for it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.stats import Day

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 4.5, 100
SIZE = (round(WIDTH_INCHES * DPI), round(HEIGHT_INCHES * DPI))  # pixels: 800 x 450
NEW_COLOUR, RESOLVED_COLOUR, ON_TIME_COLOUR = "#1f5fa8", "#2e8b57", "#c0392b"


@dataclass(frozen=True)
class ChartLabels:
    """The words on the chart, in the reader's language."""

    title: str
    new: str
    resolved: str
    on_time: str
    count: str


def digest_chart(days: list[Day], labels: ChartLabels, timezone: ZoneInfo) -> bytes:
    """Bars of new and resolved complaints per day, a line of the on-time rate (%); PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    FigureCanvasAgg(figure)
    counts = figure.add_subplot()
    positions = list(range(len(days)))
    counts.bar([x - 0.2 for x in positions], [d.new for d in days], width=0.4, color=NEW_COLOUR, label=labels.new)
    counts.bar([x + 0.2 for x in positions], [d.resolved for d in days], width=0.4, color=RESOLVED_COLOUR,
               label=labels.resolved)
    counts.set_ylabel(labels.count)
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts.set_ylim(bottom=0)
    # Every few days, counted back from the last, so the period's own day is labelled.
    ticks = positions[::-1][::max(1, len(days) // 10)][::-1]
    counts.set_xticks(ticks, [days[x].start.astimezone(timezone).strftime("%d/%m") for x in ticks])
    counts.set_xlim(-0.6, len(days) - 0.4)

    rates = counts.twinx()
    answered = [(x, d.on_time_rate * 100) for x, d in zip(positions, days) if d.on_time_rate is not None]
    rates.plot([x for x, _ in answered], [r for _, r in answered], color=ON_TIME_COLOUR, marker="o", markersize=3,
               linewidth=1.5, label=labels.on_time)
    rates.set_ylim(0, 105)
    rates.set_ylabel("%")

    handles = counts.get_legend_handles_labels()[0] + rates.get_legend_handles_labels()[0]
    # Below the plot, in a row: over it, the legend would hide a month of bars.
    counts.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.08),
                  ncols=3, fontsize="small", frameon=False)
    counts.set_title(labels.title, fontsize="medium")
    figure.tight_layout()
    out = io.BytesIO()
    # No "Software" chunk: the same figures give the same bytes, whatever matplotlib version.
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
