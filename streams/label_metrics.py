"""The alert workers' series per watched (task, label) pair, on an injected registry.

Every pair has the `feedpulse_label_*` series, with the task and the label as Prometheus
labels, so a rule or a dashboard selects a pair by label, not by a metric name. Sentiment
pairs also keep the series they had before tasks were configurable (`feedpulse_spike_score`,
`feedpulse_alerts_fired`, `feedpulse_sentiment_items`, labeled by `sentiment`), unchanged,
for the rules, dashboards and routes written against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from streams.label_pairs import WatchPair


class WatchedMetrics:
    """Items, window scores and alerts per key and watched pair."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sentiment = Counter(
            "feedpulse_sentiment_items",
            'Items per key and sentiment (top keys; the rest as key="other")',
            ["key", "sentiment"],
            registry=registry,
        )
        self.spike_score = Gauge(
            "feedpulse_spike_score",
            "Deviations above baseline of the last closed window's share, per key and sentiment",
            ["key", "sentiment"],
            registry=registry,
        )
        self.alerts = Counter(
            "feedpulse_alerts_fired",
            "Sentiment spike alerts published",
            ["severity", "sentiment"],
            registry=registry,
        )
        self.key_items = Counter(
            "feedpulse_alert_key_items",
            "Items per key, whatever their labels: the denominator of a watched label's share",
            ["key"],
            registry=registry,
        )
        self.label_items = Counter(
            "feedpulse_label_items",
            "Items per key carrying a watched (task, label) pair",
            ["key", "task", "label"],
            registry=registry,
        )
        self.label_spike_score = Gauge(
            "feedpulse_label_spike_score",
            "Deviations above baseline of the last closed window's share, per key and watched pair",
            ["key", "task", "label"],
            registry=registry,
        )
        self.label_alerts = Counter(
            "feedpulse_label_alerts_fired",
            "Spike alerts published, per watched (task, label) pair",
            ["severity", "task", "label"],
            registry=registry,
        )

    def item(self, key: str, sentiment: str | None, pairs: Iterable[WatchPair]) -> None:
        """One item of key label `key`: its sentiment series (if any) and its watched pairs."""
        if sentiment is not None:
            self.sentiment.labels(key=key, sentiment=sentiment).inc()
        self.key_items.labels(key=key).inc()
        for pair in pairs:
            self.label_items.labels(key=key, task=pair.task, label=pair.label).inc()

    def scored(self, key: str, pair: WatchPair, score: float) -> None:
        """A closed window's score for `pair` on key label `key`."""
        if pair.sentiment is not None:
            self.spike_score.labels(key=key, sentiment=pair.sentiment).set(score)
        self.label_spike_score.labels(key=key, task=pair.task, label=pair.label).set(score)

    def fired(self, severity: str, pair: WatchPair) -> None:
        """An alert published for `pair`."""
        if pair.sentiment is not None:
            self.alerts.labels(severity=severity, sentiment=pair.sentiment).inc()
        self.label_alerts.labels(severity=severity, task=pair.task, label=pair.label).inc()
