"""Prometheus metrics of the classify worker, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.label_metrics import WatchedMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def stuck_partition_gauge(registry: CollectorRegistry) -> Gauge:
    """Per partition, the offset a consumer cannot read past (a batch no codec decodes)."""
    return Gauge(
        "feedpulse_partition_stuck_offset",
        "Offset of a fetched batch that cannot be decoded, per partition (absent when none)",
        ["topic", "partition"],
        registry=registry,
    )


class WorkerMetrics:
    """Everything an operator needs to see of one classify worker."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter(
            "feedpulse_items_consumed", "Input records consumed", registry=registry
        )
        self.labeled = Counter(
            "feedpulse_items_labeled", "Items classified and published", registry=registry
        )
        self.dead_lettered = Counter(
            "feedpulse_items_dead_lettered",
            "Items sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.truncated = Counter(
            "feedpulse_items_truncated", "Texts cut at the model's window", registry=registry
        )
        self.batch_size = Histogram(
            "feedpulse_batch_size",
            "Items per classified micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "feedpulse_inference_seconds",
            "Time to classify one micro-batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "feedpulse_end_to_end_latency_seconds",
            "Input record timestamp to output acknowledged",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "feedpulse_consumer_lag",
            "High watermark minus position, per partition (approximate on Tansu)",
            ["topic", "partition"],
            registry=registry,
        )
        self.retries = Counter(
            "feedpulse_retries",
            "Retried operations by stage",
            ["stage"],
            registry=registry,
        )
        self.stuck = stuck_partition_gauge(registry)
        self.commit_failures = Counter(
            "feedpulse_commit_failures",
            "Offset commits that failed (the batch will be redelivered)",
            registry=registry,
        )
        self.model_info = Gauge(
            "feedpulse_model_info",
            "The model version this worker labels with (1 for the one being served)",
            ["name", "version", "variant"],
            registry=registry,
        )
        self._serving: tuple[str, str, str] | None = None

    def serving(self, name: str, version: str, variant: str) -> None:
        """Record the model version in use; the previous one drops to 0."""
        current = (name, version, variant)
        if current == self._serving:
            return
        if self._serving is not None:
            self.model_info.labels(*self._serving).set(0)
        self.model_info.labels(*current).set(1)
        self._serving = current


class KeyLabels:
    """Bounded metric labels for alert keys: the first `limit` keys seen `min_count` times
    keep their own label, every other key reports as "other" - the series count cannot explode.

    Slots are never reassigned, so a key's series does not flap between names.
    """

    OTHER = "other"

    def __init__(self, limit: int, min_count: int = 3, track: int = 100_000) -> None:
        self.limit = limit
        self.min_count = min_count
        self.track = track
        self.labeled: set[str] = set()
        self.counts: dict[str, int] = {}

    def current(self, key: str) -> str:
        """The label `key` reports under now, without counting a sighting."""
        return key if key in self.labeled else self.OTHER

    def label(self, key: str) -> str:
        """The label to report `key` under, counting this as one sighting of it."""
        if key in self.labeled:
            return key
        if len(self.labeled) >= self.limit:
            return self.OTHER
        count = self.counts.get(key, 0) + 1
        if count >= self.min_count:
            self.labeled.add(key)
            self.counts.pop(key, None)
            return key
        if len(self.counts) >= self.track:
            self.counts.clear()  # bounded memory; candidates simply start counting again
        self.counts[key] = count
        return self.OTHER


class AlertMetrics:
    """What an operator needs to see of the alert workers."""

    def __init__(self, registry: CollectorRegistry, key_labels: KeyLabels) -> None:
        self.registry = registry
        self.keys = key_labels
        self.records = Counter(
            "feedpulse_alert_records",
            "Labeled records read by the alert workers",
            registry=registry,
        )
        self.unreadable = Counter(
            "feedpulse_alert_unreadable_records",
            "Labeled records the alert workers could not read (skipped, counted)",
            registry=registry,
        )
        self.key_updates = Counter(
            "feedpulse_alert_key_updates",
            "Items counted into a key's window state (one item counts for each of its keys)",
            registry=registry,
        )
        self.late = Counter(
            "feedpulse_alert_late_items",
            "Items older than their key's current window (not counted)",
            registry=registry,
        )
        # Per key and watched (task, label) pair, sentiment's own series included.
        self.watched = WatchedMetrics(registry)
        self.windows_closed = Counter(
            "feedpulse_alert_windows_closed", "Key windows scored", registry=registry
        )
        self.threshold = Gauge(
            "feedpulse_spike_threshold",
            "The spike score at which the alert worker fires (for alerting rules)",
            registry=registry,
        )
        self.watermark = Gauge(
            "feedpulse_alert_watermark_seconds",
            "Event time every partition of the alert worker has reached (Unix seconds)",
            registry=registry,
        )
        self.future_timestamps = Counter(
            "feedpulse_alert_future_timestamps",
            "Items whose timestamp is unusable or more than alert_max_skew_s ahead (counted at arrival)",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "feedpulse_alert_dead_lettered",
            "Records the alert workers sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.keys_evicted = Counter(
            "feedpulse_alert_keys_evicted",
            "Idle keys dropped from the alert state (alert_idle_windows without an item)",
            registry=registry,
        )
        self.keys_held = Gauge(
            "feedpulse_alert_keys",
            "Keys in this alert worker's state",
            registry=registry,
        )


class WatchMetrics:
    """The model watch: detector states, feedback joins, prequential accuracy, jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.drift_statistic = Gauge(
            "feedpulse_drift_statistic",
            "Each drift detector's current statistic (window mean, MMD squared)",
            ["detector"],
            registry=registry,
        )
        self.drift_score = Gauge(
            "feedpulse_drift_score",
            "The embedding test's z-score against its permutation null",
            ["detector"],
            registry=registry,
        )
        self.drift_threshold = Gauge(
            "feedpulse_drift_threshold",
            "Each detector's threshold (ADWIN delta, MMD z)",
            ["detector"],
            registry=registry,
        )
        self.drift_window = Gauge(
            "feedpulse_drift_window_items",
            "Items in each detector's (recent) window",
            ["detector"],
            registry=registry,
        )
        self.drift_events = Counter(
            "feedpulse_drift_events",
            "Drift events published",
            ["detector"],
            registry=registry,
        )
        self.predictions = Counter(
            "feedpulse_watch_predictions", "Labeled items the watch observed", registry=registry
        )
        self.feedback = Counter(
            "feedpulse_feedback",
            "Feedback records by outcome",
            ["outcome"],
            registry=registry,
        )
        self._join_gauges(registry)
        self.accuracy = Gauge(
            "feedpulse_prequential_accuracy",
            "Rolling test-then-train accuracy on feedback, per task and learner",
            ["task", "learner"],
            registry=registry,
        )
        self.jobs = Counter("feedpulse_finetune_jobs", "Fine-tuning jobs queued", registry=registry)
        self.decisions = Counter(
            "feedpulse_finetune_decisions",
            "Fine-tuning decisions seen, by action",
            ["action"],
            registry=registry,
        )
        self.watched_version = Gauge(
            "feedpulse_watched_model_version",
            "The model version the watch last saw serving",
            registry=registry,
        )
        self.unreadable = Counter(
            "feedpulse_watch_unreadable",
            "Records the watch could not read, by topic",
            ["topic"],
            registry=registry,
        )
        self.stuck = stuck_partition_gauge(registry)
        self._state_metrics(registry)

    def _state_metrics(self, registry: CollectorRegistry) -> None:
        self.restored = Counter(
            "feedpulse_watch_state_restored",
            "Watch starts by outcome of loading the snapshot (restored, fresh, corrupt, mismatch)",
            ["outcome"],
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "feedpulse_watch_snapshot_seconds",
            "Time to snapshot the watch state: copy on the event loop plus write to disk",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_capture_seconds = Histogram(
            "feedpulse_watch_snapshot_capture_seconds",
            "Time the event loop spends copying the state for a snapshot",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_bytes = Gauge(
            "feedpulse_watch_snapshot_bytes", "Size of the last snapshot written", registry=registry
        )
        self.snapshot_time = Gauge(
            "feedpulse_watch_snapshot_timestamp_seconds",
            "When the last snapshot was written (Unix time)",
            registry=registry,
        )
        self.snapshot_failures = Counter(
            "feedpulse_watch_snapshot_failures",
            "Snapshots that could not be written (nothing committed for them)",
            registry=registry,
        )
        self.job_in_flight = Gauge(
            "feedpulse_finetune_job_in_flight",
            "1 while a fine-tuning job is queued or running, else 0",
            registry=registry,
        )
        self.job_not_before = Gauge(
            "feedpulse_finetune_not_before_timestamp_seconds",
            "No job starts before this Unix time (cooldown or retry back-off)",
            registry=registry,
        )
        self.rejections = Gauge(
            "feedpulse_finetune_consecutive_rejections",
            "Rejected or failed jobs since the last promotion (the retry back-off doubles)",
            registry=registry,
        )

    def _join_gauges(self, registry: CollectorRegistry) -> None:
        self.waiting = Gauge(
            "feedpulse_feedback_waiting",
            "Feedback records waiting for their prediction",
            registry=registry,
        )
        self.kept = Gauge(
            "feedpulse_feedback_predictions_kept",
            "Predictions kept for feedback to join",
            registry=registry,
        )
        self.join_bytes = Gauge(
            "feedpulse_feedback_join_bytes",
            "Bytes held by the feedback join (kind: predictions, waiting)",
            ["kind"],
            registry=registry,
        )
