"""The worker's FetchGate pauses for backpressure through StuckPartitions: resuming never
un-pauses a partition stuck on an undecodable batch, and `collect` keeps the others flowing."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException
from prometheus_client import CollectorRegistry

from streams.classify.batching import FetchGate, collect
from streams.kafka.stuck import StuckPartitions
from streams.metrics import WorkerMetrics
from tests.streams.kafka.fake_consumer import FakeConsumer

P0, P1 = TopicPartition("feeds.raw", 0), TopicPartition("feeds.raw", 1)


def gated() -> tuple[FakeConsumer, StuckPartitions, FetchGate]:
    consumer = FakeConsumer()
    metrics = WorkerMetrics(CollectorRegistry())
    partitions = StuckPartitions(consumer, metrics.stuck, 30.0, process="classify test")  # type: ignore[arg-type]
    gate = FetchGate()
    gate.partitions = partitions
    return consumer, partitions, gate


async def test_collect_fills_a_batch_from_the_healthy_partitions() -> None:
    consumer, partitions, _ = gated()
    consumer.add(P0, 2)
    consumer.add_bad(P0, CorruptRecordException("Invalid CRC"))
    consumer.add(P0, 5)
    consumer.add(P1, 30)
    records = []
    for _ in range(4):
        records += await collect(partitions, max_batch=16, max_wait_ms=20)
    got = sorted((r.partition, r.offset) for r in records)
    assert got == [(0, 0), (0, 1)] + [(1, i) for i in range(30)]
    assert partitions.stuck == {P0: 2}


async def test_resuming_after_backpressure_keeps_a_stuck_partition_paused() -> None:
    consumer, partitions, gate = gated()
    consumer.add_bad(P0, CorruptRecordException("Invalid CRC"))
    consumer.add(P1, 1)
    await collect(partitions, max_batch=8, max_wait_ms=10)
    assert consumer.paused() == {P0}

    gate.pause()
    assert consumer.paused() == {P0, P1}
    gate.resume()
    assert consumer.paused() == {P0}
    assert partitions.is_stuck(P0)
