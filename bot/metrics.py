"""Prometheus metrics, in a registry of the process's own (no module-level state).

Counters count what this process did. The outbox gauges describe the shared database,
so they are read from it when ``/metrics`` is scraped: every process reports the same
queue, whichever one did the work.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.history_read_at = None  # when the outbox's history gauges were last read (bot.outbox)
        self.complaints_received = Counter(
            "feedback_intake_complaints_received",
            "Complaints received, by channel (new complaints, not follow-ups or retries).",
            ["channel"],
            registry=self.registry,
        )
        self.messages_received = Counter(
            "feedback_intake_messages_received",
            "Inbound messages by channel and outcome (created, followup, duplicate).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.outbox_sends = Counter(
            "feedback_intake_outbox_sends",
            "Send attempts by this process, by channel and result (sent, retry, failed).",
            ["channel", "result"],
            registry=self.registry,
        )
        self.outbox_messages = Gauge(
            "feedback_intake_outbox_messages",
            "Outbox messages in the database, by status (queued, claimed, sending, held, summed at every"
            " scrape; sent and failed read from the store at most every 5 minutes).",
            ["status"],
            registry=self.registry,
        )
        self.outbox_oldest_queued_age = Gauge(
            "feedback_intake_outbox_oldest_queued_age_seconds",
            "Age of the oldest message still queued in the outbox (0 when none).",
            registry=self.registry,
        )
        self.outbox_oldest_undelivered_age = Gauge(
            "feedback_intake_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest message not yet handed to its provider (queued, retrying or in flight).",
            registry=self.registry,
        )
        self.outbox_delivery = Gauge(
            "feedback_intake_outbox_final_messages",
            "Messages whose sending ended, by channel and final state (sent, delivered, undelivered, failed);"
            " read from the store at most every 5 minutes.",
            ["channel", "state"],
            registry=self.registry,
        )
        self.outbox_resent_total_in_store = Gauge(
            "feedback_intake_outbox_resent_messages",
            "Messages sent again after an attempt whose outcome was unknown (a crash, a timeout);"
            " read from the store at most every 5 minutes.",
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "feedback_intake_fallbacks",
            "Messages sent on another contact point by this process, by channel failed and channel tried.",
            ["from_channel", "to_channel"],
            registry=self.registry,
        )
        self.resends = Counter(
            "feedback_intake_outbox_resends",
            "Sends by this process of a message whose earlier attempt had an unknown outcome, by channel.",
            ["channel"],
            registry=self.registry,
        )
        self.unreachable = Counter(
            "feedback_intake_citizens_unreachable",
            "Complaints whose citizen no contact point reached, marked by this process.",
            registry=self.registry,
        )

        # The collector's runs, observed in the serving process (``service/heap.py``).
        self.gc_pauses = Histogram(
            "feedback_intake_gc_pause_seconds",
            "How long each run of Python's cyclic garbage collector held this process (nothing else"
            " runs meanwhile), by generation; observed by the serving process.",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.gc_frozen_objects = Gauge(
            "feedback_intake_gc_frozen_objects",
            "Objects the serving process froze out of the garbage collector's sight once started"
            " (gc.freeze): collections do not walk them.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
