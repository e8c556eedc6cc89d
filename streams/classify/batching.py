"""Micro-batches: gather records by size or deadline, validate them, and the offsets they cover."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from streams.kafka.stuck import StuckPartitions
from streams.messages import FeedItem, Limits, Origin, Rejection, parse_record

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500

RecordKey = tuple[str, int, int]


async def collect(
    partitions: StuckPartitions, max_batch: int, max_wait_ms: int, *, wait: bool = True
) -> list[Any]:
    """Gather up to `max_batch` records, flushing `max_wait_ms` after the first arrives;
    without `wait`, only the records already fetched.

    Fetches through `partitions`: a batch that cannot be decoded stalls only its own
    partition (reported there), never the worker."""
    if not wait:
        got = await partitions.getmany(timeout_ms=0, max_records=max_batch)
        return [rec for recs in got.values() for rec in recs]
    records: list[Any] = []
    deadline: float | None = None
    while len(records) < max_batch:
        if deadline is None:
            timeout_ms = IDLE_POLL_MS
        else:
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
        got = await partitions.getmany(timeout_ms=timeout_ms, max_records=max_batch - len(records))
        for recs in got.values():
            records.extend(recs)
        if not records:
            return records  # idle: give the loop a chance to see stop()
        if deadline is None:
            deadline = time.monotonic() + max_wait_ms / 1000
        if time.monotonic() >= deadline:
            break
    return records


@dataclass
class ValidatedBatch:
    """A batch split into valid items and rejections, with every record's original bytes."""

    items: list[FeedItem] = field(default_factory=list)
    rejections: list[tuple[Rejection, str]] = field(default_factory=list)
    values: dict[RecordKey, bytes | None] = field(default_factory=dict)

    def original(self, origin: Origin) -> bytes | None:
        """The bytes of the record at `origin`."""
        return self.values[(origin.topic, origin.partition, origin.offset)]


def validate(records: Sequence[Any], limits: Limits) -> ValidatedBatch:
    """Parse every record once, at the edge; a bad one becomes a rejection, never an error."""
    batch = ValidatedBatch()
    for rec in records:
        origin = Origin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
        batch.values[(rec.topic, rec.partition, rec.offset)] = rec.value
        parsed = parse_record(rec.value, origin, limits)
        if isinstance(parsed, Rejection):
            batch.rejections.append((parsed, "validate"))
        else:
            batch.items.append(parsed)
    return batch


def next_offsets(records: Sequence[Any]) -> dict[TopicPartition, int]:
    """The offset to commit for every partition `records` cover: one past the last."""
    offsets: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
    return offsets


class FetchGate:
    """Pauses fetching on every assigned partition while inference is away, and resumes it.

    Pauses go through the worker's `StuckPartitions`, so resuming never un-pauses a
    partition stuck on an undecodable batch, and its retry never breaks this pause."""

    def __init__(self) -> None:
        self.partitions: StuckPartitions | None = None
        self._paused = False

    def pause(self) -> None:
        """Stop fetching: memory stays bounded while nothing can be classified."""
        if self.partitions is not None and not self._paused:
            self.partitions.pause(*self.partitions.consumer.assignment())
            self._paused = True
            log.warning("paused fetching until inference is back")

    def resume(self) -> None:
        """Fetch again, if paused (stuck partitions stay paused until their retry)."""
        if self.partitions is not None and self._paused:
            # What was held, not what the consumer reports paused: after a rebalance the
            # consumer's new assignment knows nothing of the pause, the bookkeeping does.
            self.partitions.resume(*self.partitions.held)
            self._paused = False
            log.info("inference is back: fetching resumed")
