"""StuckPartitions on aiokafka's real fetcher against the embedded broker: a partition
holding a batch no codec decodes (bad CRC; zstd attributes over garbage) delivers every
record before it, stalls there, and every other partition is read in full."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.stuck import StuckPartitions
from streams.kafka.topics import ensure_topics
from streams.metrics import stuck_partition_gauge
from streams.settings import Settings
from tests.streams.kafka.corrupt import Kind, produce_corrupt_batch

pytestmark = pytest.mark.integration

PARTITIONS = 3
BAD = 1


async def fill(settings: Settings, topic: str, kind: Kind) -> tuple[int, dict[int, list[int]]]:
    """Good records on every partition, and a corrupt batch in the middle of partition BAD.

    Returns the corrupt batch's offset and the offsets of the good records per partition.
    """
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=5)
    await producer.start()
    good: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    try:
        for p in range(PARTITIONS):
            for i in range(20):
                meta = await producer.send_and_wait(topic, b"before %d" % i, partition=p)
                good[p].append(meta.offset)
        bad = await produce_corrupt_batch(settings, topic, BAD, kind)
        for p in range(PARTITIONS):
            for i in range(20):
                meta = await producer.send_and_wait(topic, b"after %d" % i, partition=p)
                good[p].append(meta.offset)
    finally:
        await producer.stop()
    return bad, good


@pytest.mark.parametrize("kind", ["crc", "zstd"])
async def test_real_fetcher_stalls_only_the_corrupt_partition(
    broker: EmbeddedBroker, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"stuck-{uuid.uuid4().hex[:8]}"
    settings = Settings(bootstrap_servers=broker.bootstrap_servers, topic_partitions=PARTITIONS)
    await ensure_topics(settings, [topic])
    bad, good = await fill(settings, topic, kind)

    consumer = group_consumer(settings, f"g-{topic}")
    await consumer.start()
    registry = CollectorRegistry()
    partitions = StuckPartitions(
        consumer, stuck_partition_gauge(registry), retry_s=0.5, process="broker-test"
    )
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    caplog.set_level(logging.ERROR, logger="streams.kafka.stuck")
    expected = {p: [o for o in good[p] if p != BAD or o < bad] for p in range(PARTITIONS)}
    try:
        for _ in range(100):
            got = await partitions.getmany(timeout_ms=100, max_records=16)
            for tp, recs in got.items():
                seen[tp.partition].extend(r.offset for r in recs)
            if seen == expected and len(caplog.records) >= 2:
                break
    finally:
        await consumer.stop()

    stuck_tp = TopicPartition(topic, BAD)
    assert partitions.stuck == {stuck_tp: bad}
    # All before it, nothing after it; every other partition in full, in order, once.
    assert seen == expected
    labels = {"topic": topic, "partition": str(BAD)}
    assert registry.get_sample_value("feedpulse_partition_stuck_offset", labels) == bad
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) >= 2, errors  # reported, retried after 0.5 s, reported again
    assert f"topic={topic} partition={BAD} offset={bad}" in errors[0]
