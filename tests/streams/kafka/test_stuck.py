"""StuckPartitions against a fake consumer that keeps aiokafka's fetch contract: a batch no
codec decodes pauses only its own partition, is reported and retried; nothing else is lost."""

from __future__ import annotations

import asyncio
import gzip
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Any

import cramjam
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import (
    ConsumerStoppedError,
    CorruptRecordException,
    KafkaConnectionError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from prometheus_client import CollectorRegistry

from streams.kafka.stuck import StuckPartitions, is_undecodable
from streams.metrics import stuck_partition_gauge
from tests.streams.kafka.corrupt import built_batch
from tests.streams.kafka.fake_consumer import FakeConsumer

T = "feeds.raw"
P0, P1, P2 = (TopicPartition(T, p) for p in range(3))
CRC = CorruptRecordException(f"Invalid CRC - {P0}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, retry_s: float = 30.0) -> None:
        self.consumer = FakeConsumer()
        self.registry = CollectorRegistry()
        self.clock = Clock()
        self.partitions = StuckPartitions(
            self.consumer,  # type: ignore[arg-type]
            stuck_partition_gauge(self.registry),
            retry_s,
            process="test-proc",
            clock=self.clock,
        )

    def gauge(self, tp: TopicPartition) -> float | None:
        return self.registry.get_sample_value(
            "feedpulse_partition_stuck_offset", {"topic": tp.topic, "partition": str(tp.partition)}
        )

    async def read_all(self, calls: int = 20, **kwargs: Any) -> dict[TopicPartition, list[int]]:
        """Offsets returned per partition over `calls` calls."""
        seen: dict[TopicPartition, list[int]] = {}
        for _ in range(calls):
            got = await self.partitions.getmany(**kwargs)
            for tp, recs in got.items():
                seen.setdefault(tp, []).extend(r.offset for r in recs)
        return seen


async def test_a_bad_batch_stalls_its_partition_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup()
    s.consumer.add(P0, 3)
    bad = s.consumer.add_bad(P0, CRC)
    s.consumer.add(P0, 4)
    s.consumer.add(P1, 10)
    s.consumer.add(P2, 10)
    with caplog.at_level(logging.ERROR, logger="streams.kafka.stuck"):
        seen = await s.read_all(max_records=4)

    # The readable records before the bad batch, and every record of the other partitions,
    # exactly once and in order; nothing behind the bad batch.
    assert seen == {P0: [0, 1, 2], P1: list(range(10)), P2: list(range(10))}
    assert s.partitions.stuck == {P0: bad}
    assert s.partitions.is_stuck(P0) and not s.partitions.is_stuck(P1)
    assert s.consumer.paused() == {P0}
    assert s.consumer.positions[P0] == bad
    assert s.gauge(P0) == bad and s.gauge(P1) is None
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = line.getMessage()
    for part in ("test-proc", f"topic={T}", "partition=0", f"offset={bad}", "Invalid CRC"):
        assert part in text, text


async def test_no_call_ever_reads_records_of_two_partitions() -> None:
    # A getmany over several partitions that raises has moved the positions of those it
    # read first: the fake drops their records like aiokafka does. None may go missing.
    s = Setup()
    s.consumer.add(P1, 50)
    s.consumer.add_bad(P0, CRC)
    s.consumer.add(P2, 50)
    seen = await s.read_all(calls=40, max_records=7, timeout_ms=5)
    assert seen[P1] == list(range(50)) and seen[P2] == list(range(50))
    # Each call reads one partition, or all of them for one record (the wait).
    assert all(len(tps) == 1 or n == 1 for tps, n in s.consumer.calls)
    assert any(len(tps) != 1 for tps, _ in s.consumer.calls)


async def test_max_records_is_never_exceeded() -> None:
    s = Setup()
    for tp in (P0, P1, P2):
        s.consumer.add(tp, 5)
    sizes = []
    for _ in range(30):
        got = await s.partitions.getmany(timeout_ms=5, max_records=2)
        sizes.append(sum(len(v) for v in got.values()))
    assert max(sizes) == 2 and sum(sizes) == 15


async def test_a_wait_returns_the_first_record_to_arrive_and_what_is_buffered() -> None:
    s = Setup()
    s.consumer.add(P0, 0)
    s.consumer.add(P1, 0)

    async def arrive() -> None:
        await asyncio.sleep(0.02)
        s.consumer.add(P1, 3)

    task = asyncio.create_task(arrive())
    got = await s.partitions.getmany(timeout_ms=2000, max_records=10)
    await task
    assert {tp: [r.offset for r in recs] for tp, recs in got.items()} == {P1: [0, 1, 2]}


async def test_a_batch_failing_in_the_wait_is_found_by_reading_partitions_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup()
    s.consumer.add(P0, 0)
    s.consumer.add(P1, 0)

    async def arrive() -> None:
        await asyncio.sleep(0.02)
        s.consumer.add_bad(P1, cramjam.DecompressionError("Unknown frame descriptor"))

    task = asyncio.create_task(arrive())
    with caplog.at_level(logging.WARNING, logger="streams.kafka.stuck"):
        assert await s.partitions.getmany(timeout_ms=500, max_records=10) == {}
        await task
        s.consumer.add(P0, 2)
        seen = await s.read_all(calls=3, timeout_ms=100)
    assert seen == {P0: [0, 1]}
    assert s.partitions.stuck == {P1: 0}
    assert s.gauge(P1) == 0
    assert "reading partitions one by one" in caplog.text


async def test_a_batch_failing_once_in_the_wait_and_never_again_ends_the_search() -> None:
    s = Setup(retry_s=30)
    s.consumer.add(P0, 0)
    s.consumer.add_bad(P0, CRC, bad_reads=1)  # a transient wire corruption
    s.consumer.add(P0, 1)
    seen = await s.read_all(calls=4, timeout_ms=20)
    assert seen == {P0: [0, 1]} and s.partitions.stuck == {}
    s.clock.now += 30
    before = len(s.consumer.calls)
    await s.partitions.getmany(timeout_ms=20)
    assert any(tps == () for tps, _ in s.consumer.calls[before:])  # plain waits again


async def test_retried_after_retry_s_reported_again_then_healed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup(retry_s=30)
    s.consumer.add(P0, 2)
    entry_offset = s.consumer.add_bad(P0, CRC)
    s.consumer.add(P0, 3)
    with caplog.at_level(logging.INFO, logger="streams.kafka.stuck"):
        await s.read_all(calls=3)
        assert s.partitions.stuck == {P0: 2}
        reads = len(s.consumer.calls)

        s.clock.now += 29  # not due: no read of P0 at all
        await s.read_all(calls=3)
        assert s.consumer.paused() == {P0}
        assert all(P0 not in tps for tps, _ in s.consumer.calls[reads:])

        s.clock.now += 1  # due: fetched again, still corrupt -> reported again
        await s.read_all(calls=3)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and s.partitions.stuck == {P0: 2}
        assert s.consumer.paused() == {P0} and s.gauge(P0) == 2

        s.consumer.logs[P0][entry_offset].bad_reads = 0  # the wire corruption is gone
        s.clock.now += 30
        seen = await s.read_all(calls=3)
    assert seen == {P0: [2, 3, 4, 5]}
    assert s.partitions.stuck == {} and s.gauge(P0) is None
    assert s.consumer.paused() == set()
    assert "reads again past offset 2" in caplog.text


async def test_a_revoked_stuck_partition_is_forgotten_and_its_gauge_cleared() -> None:
    s = Setup()
    s.consumer.add_bad(P0, CRC)
    s.consumer.add(P1, 1)
    await s.read_all(calls=2)
    assert s.gauge(P0) == 0
    s.consumer.revoke(P0)
    await s.partitions.getmany()
    assert s.partitions.stuck == {} and s.gauge(P0) is None


async def test_a_stuck_partition_assigned_back_unpaused_is_tried_again() -> None:
    s = Setup()
    s.consumer.add_bad(P0, CRC, bad_reads=2)
    s.consumer.add(P0, 1)
    await s.read_all(calls=2)
    assert s.partitions.stuck == {P0: 0}
    s.consumer.reassign(P0)  # a rebalance gave it back: aiokafka's new state is unpaused
    seen = await s.read_all(calls=3)
    assert seen == {P0: [0, 1]} and s.partitions.stuck == {}


async def test_the_callers_pauses_and_the_stuck_pauses_do_not_undo_each_other() -> None:
    s = Setup(retry_s=10)
    s.consumer.add_bad(P0, CRC)
    s.consumer.add(P1, 1)
    await s.read_all(calls=2)
    assert s.consumer.paused() == {P0}

    # Backpressure (the classify worker's FetchGate): pause everything, then resume.
    s.partitions.pause(P0, P1)
    assert s.consumer.paused() == {P0, P1}
    s.clock.now += 10  # the retry is due, but the caller holds P0: it stays paused
    await s.partitions.getmany()
    assert s.consumer.paused() == {P0, P1}
    s.partitions.resume(*s.consumer.paused())
    assert s.consumer.paused() == {P0}  # stuck: not resumed by the caller...
    await s.partitions.getmany()
    assert P0 in s.partitions.stuck and s.consumer.paused() == {P0}  # ...retried, failed again


async def test_clear_removes_every_label_it_set() -> None:
    s = Setup()
    s.consumer.add_bad(P0, CRC)
    s.consumer.add_bad(P1, CRC)
    await s.read_all(calls=3)
    assert s.gauge(P0) == 0 and s.gauge(P1) == 0
    s.partitions.clear()
    assert s.gauge(P0) is None and s.gauge(P1) is None and s.partitions.stuck == {}


@pytest.mark.parametrize(
    "error",
    [
        ConsumerStoppedError(),
        KafkaConnectionError("broker gone"),
        OffsetOutOfRangeError({P0: 5}),
        RecordTooLargeError("too large"),
        TopicAuthorizationFailedError(T),
        ValueError("a bug"),
    ],
)
async def test_other_errors_propagate(error: BaseException) -> None:
    s = Setup()
    s.consumer.add(P0, 1)
    s.consumer.fail_with = error
    with pytest.raises(type(error)):
        await s.partitions.getmany(timeout_ms=10)
    s.consumer.positions[P0] = 0
    with pytest.raises(type(error)):
        await s.read_all(calls=1, timeout_ms=0)
    assert s.partitions.stuck == {}


async def test_cancellation_propagates() -> None:
    s = Setup()
    s.consumer.add(P0, 0)
    task = asyncio.create_task(s.partitions.getmany(timeout_ms=5000))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s.consumer.add(P0, 1)
    assert await s.read_all(calls=1) == {P0: [0]}


# -- which exceptions count as undecodable: real aiokafka decoding of broken batches ----


def batch(codec: int) -> bytearray:
    return built_batch(codec, 3)


def with_payload(codec: int, payload: bytes) -> bytes:
    """A batch of `codec` whose records section is `payload`, with a correct CRC."""
    buf = batch(codec)[:61] + payload
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def flipped_byte() -> bytes:
    buf = batch(0)
    buf[-2] ^= 0xFF
    return bytes(buf)


def unknown_codec() -> bytes:
    buf = batch(0)
    struct.pack_into(">h", buf, 21, 5)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


BROKEN: dict[str, tuple[Callable[[], bytes], type[BaseException]]] = {
    "bad crc": (flipped_byte, CorruptRecordException),
    "gzip garbage": (lambda: with_payload(1, bytes(range(7, 67))), gzip.BadGzipFile),
    "gzip deflate garbage": (lambda: with_payload(1, b"\x1f\x8b\x08\x00" + bytes(20)), zlib.error),
    "gzip truncated": (lambda: with_payload(1, bytes(batch(1)[61:-12])), EOFError),
    "snappy garbage": (lambda: with_payload(2, bytes(range(7, 67))), cramjam.DecompressionError),
    "lz4 garbage": (lambda: with_payload(3, bytes(range(7, 67))), cramjam.DecompressionError),
    "zstd garbage": (lambda: with_payload(4, bytes(range(7, 67))), cramjam.DecompressionError),
    "records garbage": (lambda: with_payload(0, b"\xff" * 20), CorruptRecordException),
    "unknown codec": (unknown_codec, UnsupportedCodecError),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_what_aiokafka_raises_on_broken_batches_counts_as_undecodable(name: str) -> None:
    make, expected = BROKEN[name]
    records = PartitionRecords(P0, MemoryRecords(make()), [], 0, None, None, True, 0)
    with pytest.raises(expected) as info:
        list(records)
    assert is_undecodable(info.value)


def test_zlib_and_header_errors_count_and_network_or_stop_errors_do_not() -> None:
    assert is_undecodable(zlib.error("invalid stored block lengths"))
    assert is_undecodable(struct.error("unpack requires a buffer"))
    assert is_undecodable(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    for error in (
        ConsumerStoppedError(),
        KafkaConnectionError(),
        asyncio.CancelledError(),
        OffsetOutOfRangeError({}),
        ConnectionResetError(),
        TimeoutError(),
    ):
        assert not is_undecodable(error), error
