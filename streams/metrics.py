"""Prometheus metrics of the classify worker, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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
        self.commit_failures = Counter(
            "feedpulse_commit_failures",
            "Offset commits that failed (the batch will be redelivered)",
            registry=registry,
        )


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> int | None:
    """Expose `registry` over HTTP; port 0 means off. Returns the bound port."""
    if port == 0:
        return None
    start_http_server(port, addr=host, registry=registry)
    return port
