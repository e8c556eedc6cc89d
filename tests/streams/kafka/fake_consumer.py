"""An in-memory stand-in for `AIOKafkaConsumer` that keeps aiokafka 0.14's fetch contract
where it matters for undecodable batches (see aiokafka/consumer/fetcher.py):

- `getmany(*tps, max_records=n)` reads partitions in turn; a batch that cannot be decoded
  raises out of the call, and the records this call had already read of that partition are
  dropped with the position left where it was (the fetcher re-fetches from there);
- records read in the same call from partitions before the failing one are dropped too,
  but their positions HAVE moved: a caller that swallows the error skips them for good;
- paused partitions return nothing; `seek` moves a position; `position` is async.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError, IllegalStateError


@dataclass
class Rec:
    """What a ConsumerRecord carries that the code under test reads."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass
class Entry:
    """One offset of a partition's log; `bad_reads` reads of it fail before it decodes."""

    offset: int
    value: bytes
    bad_reads: float = 0
    error: BaseException | None = None


@dataclass
class FakeConsumer:
    logs: dict[TopicPartition, list[Entry]] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    paused_tps: set[TopicPartition] = field(default_factory=set)
    assigned: set[TopicPartition] = field(default_factory=set)
    # (partitions asked for, max_records) of every getmany call
    calls: list[tuple[tuple[TopicPartition, ...], int | None]] = field(default_factory=list)
    stopped: bool = False
    fail_with: BaseException | None = None

    def __post_init__(self) -> None:
        self._arrived = asyncio.Event()

    # -- test set-up -----------------------------------------------------------------
    def add(self, tp: TopicPartition, n: int) -> list[int]:
        """Append `n` good records to `tp`; returns their offsets."""
        self.assigned.add(tp)
        self.positions.setdefault(tp, 0)
        log = self.logs.setdefault(tp, [])
        offsets = []
        for _ in range(n):
            offset = len(log)
            log.append(Entry(offset, f"{tp.partition}:{offset}".encode()))
            offsets.append(offset)
        self._arrived.set()
        return offsets

    def add_bad(
        self, tp: TopicPartition, error: BaseException, bad_reads: float = float("inf")
    ) -> int:
        """Append an undecodable batch (one offset) that fails `bad_reads` reads."""
        (offset,) = self.add(tp, 1)
        entry = self.logs[tp][offset]
        entry.bad_reads, entry.error = bad_reads, error
        return offset

    def revoke(self, tp: TopicPartition) -> None:
        self.assigned.discard(tp)
        self.paused_tps.discard(tp)

    def reassign(self, tp: TopicPartition) -> None:
        """A rebalance handing `tp` back: aiokafka's new assignment state is unpaused."""
        self.assigned.add(tp)
        self.paused_tps.discard(tp)

    # -- the consumer's API ----------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._check_assigned(tp)
            self.paused_tps.add(tp)

    def resume(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._check_assigned(tp)
            self.paused_tps.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_assigned(tp)
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        self._check_assigned(tp)
        return self.positions[tp]

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Rec]]:
        self.calls.append((tps, max_records))
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            if self.stopped:
                raise ConsumerStoppedError()
            if self.fail_with is not None:
                raise self.fail_with
            got = self._read(list(tps) or sorted(self.assigned), max_records)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return {}

    def _read(self, tps: list[TopicPartition], max_records: int | None) -> dict[Any, list[Rec]]:
        out: dict[Any, list[Rec]] = {}
        budget = max_records
        for tp in tps:
            if tp not in self.assigned or tp in self.paused_tps:
                continue
            recs = self._read_one(tp, budget)  # may raise: `out` is dropped, as in aiokafka
            if recs:
                out[tp] = recs
                self.positions[tp] = recs[-1].offset + 1
                if budget is not None:
                    budget -= len(recs)
                    if budget == 0:
                        break
        return out

    def _read_one(self, tp: TopicPartition, budget: int | None) -> list[Rec]:
        recs: list[Rec] = []
        for entry in self.logs.get(tp, [])[self.positions[tp] :]:
            if budget is not None and len(recs) >= budget:
                break
            if entry.bad_reads > 0:
                entry.bad_reads -= 1
                assert entry.error is not None
                raise entry.error
            recs.append(Rec(tp.topic, tp.partition, entry.offset, entry.value))
        return recs

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"Partition {tp} is not assigned")
