"""Test helpers shared across packages: a producer we did not write, reading dead letters,
scraping a process's metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers
from streams.kafka.tail import read_topics
from streams.settings import Settings


def produce_librdkafka(
    bootstrap_servers: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]],
    codec: str,
    partition: int = 0,
) -> None:
    """Write `records` (key, value) with librdkafka in `codec` batches, to one partition."""
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "compression.type": codec, "linger.ms": 100}
    )
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0 and failures == []


async def dead_letters(settings: Settings) -> list[Any]:
    """Every record on the dead-letter topic so far."""
    return [rec async for rec in read_topics(settings, [settings.dlq_topic], idle_timeout_s=3)]


def by_reason(letters: list[Any]) -> dict[str, list[Any]]:
    """Dead letters grouped by their reason header."""
    grouped: dict[str, list[Any]] = {}
    for rec in letters:
        reason = decode_headers(rec.headers)[DLQ_HEADER_PREFIX + "reason"]
        grouped.setdefault(reason, []).append(rec)
    return grouped


def scrape(port: int) -> dict[str, float]:
    """Prometheus text format -> {series: value} (series with their labels, as written)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples
