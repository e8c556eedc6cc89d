"""A batch no codec can decode, on one partition of the input topic of a running worker (real
embedded broker): the worker stays up, labels everything on the other partitions and
before the batch, reports the partition stuck (log line, gauge), and commits nothing past it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import audit_outputs
from tests.streams.classify.test_worker import HEADLINES, start_worker, stop_worker
from tests.streams.kafka.corrupt import produce_corrupt_batch

pytestmark = pytest.mark.integration

BAD = 2
PER_PARTITION = 8

Position = tuple[int, int]


async def produce_good(settings: Settings, tag: str) -> list[Position]:
    """PER_PARTITION labeled-to-be records on every partition; their positions."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=5)
    await producer.start()
    try:
        positions = []
        for p in range(settings.topic_partitions):
            for i in range(PER_PARTITION):
                doc = {"id": f"{tag}-{p}-{i}", "text": HEADLINES[i % len(HEADLINES)]}
                meta = await producer.send_and_wait(
                    settings.input_topic, json.dumps(doc).encode(), partition=p
                )
                positions.append((meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()


async def committed(settings: Settings) -> dict[int, int | None]:
    """The group's committed offsets, read by a consumer that never joins the group (the
    admin client's OffsetFetch does not decode against Tansu 0.6)."""
    consumer = group_consumer(settings, settings.group_id)
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.input_topic, p))
            for p in range(settings.topic_partitions)
        }
    finally:
        await consumer.stop()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


async def wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_corrupt_batch_stalls_one_partition_and_the_worker_stays_up(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory(broker, stuck_retry_s=1.0)
    await ensure_topics(settings, pipeline_topics(settings))
    before = await produce_good(settings, "before")
    bad = await produce_corrupt_batch(settings, settings.input_topic, BAD)
    after = await produce_good(settings, "after")
    behind = {pos for pos in after if pos[0] == BAD}
    readable = [pos for pos in before + after if pos not in behind]
    assert all(offset < bad for p, offset in before if p == BAD)

    caplog.set_level(logging.INFO, logger="streams.kafka.stuck")
    worker, task = await start_worker(settings)
    try:
        audit = await audit_outputs(settings, readable, by="position", timeout_s=120, settle_s=1)
        stuck = worker.metrics.registry
        labels = {"topic": settings.input_topic, "partition": str(BAD)}
        # Reported, fetched again after stuck_retry_s, still corrupt: reported again.
        await wait_for(lambda: len(errors(caplog)) >= 2, timeout_s=30)
        assert stuck.get_sample_value("feedpulse_partition_stuck_offset", labels) == bad
        assert not task.done(), "the worker died"
        offsets = await committed(settings)
    finally:
        await stop_worker(worker, task)

    assert audit.missing(readable, by="position") == set()
    assert audit.duplicates() == 0
    assert sum(audit.labeled_at.values()) == len(readable)
    assert not behind & audit.accounted("position")  # nothing past the batch was read
    assert offsets[BAD] == bad  # committed up to the batch, never past it
    for p in range(settings.topic_partitions):
        if p != BAD:
            assert offsets[p] == max(o for q, o in readable if q == p) + 1
    line = errors(caplog)[0]
    for part in (f"topic={settings.input_topic}", f"partition={BAD}", f"offset={bad}", "CRC"):
        assert part in line, line
    assert f"classify {worker.worker_id}" in line
    # Stopped: this process no longer owns the partition, so no stuck series is left over.
    assert (
        worker.metrics.registry.get_sample_value("feedpulse_partition_stuck_offset", labels) is None
    )
