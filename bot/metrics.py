"""Prometheus metrics, in a registry of the process's own (no module-level state).

Counters count what this process did. The outbox gauges describe the shared database,
so they are read from it when ``/metrics`` is scraped: every process reports the same
queue, whichever one did the work.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "Outbox messages in the database, by status (queued, sending, sent, failed).",
            ["status"],
            registry=self.registry,
        )
        self.outbox_oldest_queued_age = Gauge(
            "feedback_intake_outbox_oldest_queued_age_seconds",
            "Age of the oldest message still queued in the outbox (0 when none).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
