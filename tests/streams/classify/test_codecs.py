"""Records from a producer we did not write (librdkafka, through confluent-kafka) in every
compression codec Kafka carries, with keys, headers and null values, through a running
worker: every record is labeled or dead-lettered, and compressed outputs read back."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.messages import EMPTY_MESSAGE
from streams.settings import Settings
from streams.testing.audit import audit_outputs
from tests.streams.classify.test_worker import HEADLINES, start_worker, stop_worker

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 25


def produce_with_librdkafka(settings: Settings, codec: str) -> list[tuple[int, int]]:
    """PER_CODEC records in `codec` batches (keyed JSON with headers, keyless text, one null
    value); returns the (partition, offset) of each, from librdkafka's delivery reports."""
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "compression.type": codec,
            # Many records per batch: a batch that does not shrink could go uncompressed.
            "linger.ms": 200,
        }
    )
    positions: list[tuple[int, int]] = []
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            positions.append((message.partition(), message.offset()))  # type: ignore[attr-defined]

    for i in range(PER_CODEC - 1):
        text = HEADLINES[i % len(HEADLINES)]
        if i % 2:
            value = f"{text} ({codec} {i})".encode()
            producer.produce(settings.input_topic, value=value, on_delivery=delivered)
        else:
            doc = {"id": f"{codec}-{i}", "text": text, "source": codec}
            producer.produce(
                settings.input_topic,
                key=f"{codec}-{i}".encode(),
                value=json.dumps(doc).encode(),
                headers=[("origin", codec.encode()), ("trace", None)],
                on_delivery=delivered,
            )
    producer.produce(settings.input_topic, key=b"tombstone", value=None, on_delivery=delivered)
    assert producer.flush(30) == 0, "librdkafka could not deliver everything"
    assert failures == []
    return positions


async def test_every_codec_from_librdkafka_is_labeled_or_dead_lettered(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker, output_compression="zstd")
    await ensure_topics(settings, pipeline_topics(settings))
    positions = [p for codec in CODECS for p in produce_with_librdkafka(settings, codec)]
    assert len(set(positions)) == len(CODECS) * PER_CODEC

    worker, task = await start_worker(settings)
    try:
        # The audit reads the worker's zstd outputs back through the same client code.
        audit = await audit_outputs(settings, positions, by="position", timeout_s=120)
    finally:
        await stop_worker(worker, task)

    assert audit.missing(positions, by="position") == set()
    assert audit.duplicates() == 0
    assert sorted(audit.reasons.values()) == [EMPTY_MESSAGE] * len(CODECS), audit.reasons
    assert sum(audit.labeled.values()) == len(CODECS) * (PER_CODEC - 1)
    assert {f"{codec}-{i}" for codec in CODECS for i in range(0, PER_CODEC - 1, 2)} <= set(
        audit.labeled
    )
