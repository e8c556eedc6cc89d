"""Stuck partitions: a fetched batch that no codec can decode pauses its own partition, is
reported, and is fetched again later; every other partition keeps flowing.

aiokafka decodes fetched batches lazily, inside `getmany`. A batch whose CRC does not match,
or whose compressed payload does not decompress, raises out of `getmany` on every call
(the fetcher re-fetches it from the same position), so a plain consumer loop crash-loops and
every record behind the batch waits forever. Worse, a `getmany` over several partitions
that raises has already advanced the positions of the partitions it drained before the bad
one: those records are dropped from memory and would be skipped.

`StuckPartitions` therefore never lets one `getmany` call read records of two partitions:
buffered records are read partition by partition (`consumer.getmany(tp, ...)`), so a
failure names its partition and costs nothing elsewhere, and the wait for new records asks
for one record only. Use it in place of the consumer's `getmany`, and pause/resume
through it:

    partitions = StuckPartitions(consumer, metrics.stuck, settings.stuck_retry_s,
                                 process="model-watch")
    while running:
        batches = await partitions.getmany(timeout_ms=500, max_records=256)
        ...                                  # process, then commit what was processed
    partitions.clear()                       # on shutdown: no stale gauge labels

Callers that pause partitions for their own reasons (backpressure) call `pause()`/
`resume()` here, never on the consumer: a stuck partition stays paused until its retry,
and a retry never resumes a partition the caller holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CorruptRecordException, IllegalStateError, UnsupportedCodecError
from prometheus_client import Gauge

log = logging.getLogger(__name__)

Batches = dict[TopicPartition, list[ConsumerRecord]]
PROBE_POLL_S = 0.05


def _decompression_errors() -> tuple[type[BaseException], ...]:
    try:
        from cramjam import DecompressionError
    except ImportError:  # without cramjam aiokafka raises UnsupportedCodecError instead
        return ()
    return (DecompressionError,)


# What aiokafka (0.14, C or Python record parser) raises while it decodes a fetched batch,
# found by fuzzing batches with valid and invalid CRCs in every codec:
# - CorruptRecordException: CRC mismatch, or record fields that do not parse;
# - UnsupportedCodecError: a codec id it does not know, or whose library is missing;
# - cramjam's DecompressionError (snappy, lz4, zstd); gzip.BadGzipFile, zlib.error and
#   EOFError (gzip); struct.error (snappy's xerial framing);
# - UnicodeDecodeError: a record header key that is not UTF-8.
# Only around `consumer.getmany` are they caught, and nothing else in that call raises
# these types: coordinator and fetch errors are other KafkaErrors, and ConsumerStoppedError,
# cancellation and network errors (retried inside aiokafka's fetch task, never raised
# there) pass through untouched. A key/value deserializer runs while records are unpacked:
# its UnicodeDecodeError would count too (feedpulse's consumers set none).
UNDECODABLE: tuple[type[BaseException], ...] = (
    CorruptRecordException,
    UnsupportedCodecError,
    gzip.BadGzipFile,
    zlib.error,
    EOFError,
    struct.error,
    UnicodeDecodeError,
    *_decompression_errors(),
)


def is_undecodable(exc: BaseException) -> bool:
    """Whether `exc`, raised by `consumer.getmany`, means a fetched batch cannot be decoded."""
    return isinstance(exc, UNDECODABLE)


@dataclass
class Stuck:
    """One stuck partition: where, why, and when it is fetched again."""

    offset: int
    error: str
    retry_at: float
    # Fetching again: the next read says whether the batch decodes now.
    retrying: bool = False


class StuckPartitions:
    """Fetches through a started `AIOKafkaConsumer`, isolating undecodable batches.

    `getmany` returns what the consumer's `getmany` would, minus the records of stuck
    partitions. A partition is stuck at its position when its next batch fails to decode:
    it is paused, logged at ERROR, and `gauge{topic,partition}` is set to the offset. After
    `retry_s` it is fetched again: a batch that decodes now (a transient wire corruption)
    clears the gauge; one that still fails is reported again. Revoked partitions are
    forgotten (gauge cleared) on the next `getmany`.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        gauge: Gauge,
        retry_s: float,
        *,
        process: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.gauge = gauge
        self.retry_s = retry_s
        self.process = process
        self._clock = clock
        self._stuck: dict[TopicPartition, Stuck] = {}
        # Partitions read one record per call until this time: a batch failed after
        # readable records that must not stay stuck behind it.
        self._careful: dict[TopicPartition, float] = {}
        self._held: set[TopicPartition] = set()
        # Set while a batch failed in a wait that could not say which partition it was.
        self._probe_until: float | None = None
        self._turn = 0

    @property
    def stuck(self) -> dict[TopicPartition, int]:
        """The stuck partitions and the offset each cannot be read past."""
        return {tp: s.offset for tp, s in self._stuck.items()}

    def is_stuck(self, tp: TopicPartition) -> bool:
        """Whether `tp` is stuck (paused, or being fetched again to test it)."""
        return tp in self._stuck

    @property
    def held(self) -> set[TopicPartition]:
        """The partitions the caller paused (and has not resumed)."""
        return set(self._held)

    def pause(self, *partitions: TopicPartition) -> None:
        """Pause partitions for the caller's own reasons (backpressure)."""
        assigned = self.consumer.assignment()
        tps = [tp for tp in partitions if tp in assigned]
        self._held.update(tps)
        self.consumer.pause(*tps)

    def resume(self, *partitions: TopicPartition) -> None:
        """Undo `pause`; a stuck partition stays paused until its retry is due."""
        assigned = self.consumer.assignment()
        self._held.difference_update(partitions)
        self.consumer.resume(*[tp for tp in partitions if tp in assigned and not self._parked(tp)])

    def forget(self, *partitions: TopicPartition) -> None:
        """Drop what is known of `partitions` (revoked) and their gauge labels."""
        for tp in partitions:
            if self._stuck.pop(tp, None) is not None:
                with contextlib.suppress(KeyError):
                    self.gauge.remove(tp.topic, str(tp.partition))
            self._careful.pop(tp, None)
            self._held.discard(tp)

    def clear(self) -> None:
        """Forget every partition (on shutdown), removing every gauge label it set."""
        self.forget(*list(self._stuck), *list(self._careful), *list(self._held))

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Batches:
        """Like `AIOKafkaConsumer.getmany()` over all assigned partitions: buffered records
        at once, else wait up to `timeout_ms` for the next fetch. Undecodable batches are
        handled here and never raise; every other error of the consumer does."""
        self._reconcile()
        self._start_due_retries()
        records = await self._drain(max_records)
        if records or timeout_ms <= 0:
            return records
        first = await self._wait(timeout_ms, max_records)
        if not first:
            return first
        for tp, recs in first.items():
            self._read_fine(tp, recs)
        left = None if max_records is None else max_records - sum(map(len, first.values()))
        if left != 0:
            for tp, recs in (await self._drain(left)).items():
                first.setdefault(tp, []).extend(recs)
        return first

    def _parked(self, tp: TopicPartition) -> bool:
        """Stuck and waiting for its retry: paused by us."""
        entry = self._stuck.get(tp)
        return entry is not None and not entry.retrying

    def _fetchable(self) -> list[TopicPartition]:
        """Assigned, unpaused partitions, starting one further each call (fair drains)."""
        paused = self.consumer.paused()
        tps = sorted(tp for tp in self.consumer.assignment() if tp not in paused)
        if not tps:
            return tps
        self._turn = (self._turn + 1) % len(tps)
        return tps[self._turn :] + tps[: self._turn]

    def _reconcile(self) -> None:
        """Forget revoked partitions; a stuck one assigned anew (unpaused) is being retried."""
        assigned = self.consumer.assignment()
        self.forget(
            *[tp for tp in {*self._stuck, *self._careful, *self._held} if tp not in assigned]
        )
        paused = self.consumer.paused()
        now = self._clock()
        for tp, entry in self._stuck.items():
            if not entry.retrying and tp not in paused:
                entry.retrying = True
                self._careful[tp] = now + self.retry_s
        for tp, until in list(self._careful.items()):
            if until <= now and tp not in self._stuck:
                del self._careful[tp]
        if self._probe_until is not None and self._probe_until <= now:
            self._probe_until = None  # never found again: it decoded on the refetch

    def _start_due_retries(self) -> None:
        now = self._clock()
        for tp, entry in self._stuck.items():
            if entry.retrying or now < entry.retry_at or tp in self._held:
                continue
            entry.retrying = True
            self._careful[tp] = now + self.retry_s
            self.consumer.resume(tp)
            log.info(
                "%s: fetching %s-%d again from offset %d",
                self.process,
                tp.topic,
                tp.partition,
                entry.offset,
            )

    async def _drain(self, max_records: int | None) -> Batches:
        """Buffered records, each partition read alone so a bad batch costs only its own."""
        out: Batches = {}
        taken = 0
        for tp in self._fetchable():
            left = None if max_records is None else max_records - taken
            if left == 0:
                break
            recs = await self._drain_one(tp, left)
            if recs:
                out[tp] = recs
                taken += len(recs)
                self._read_fine(tp, recs)
        return out

    async def _drain_one(self, tp: TopicPartition, left: int | None) -> list[ConsumerRecord]:
        if tp in self._careful:
            return await self._step(tp, left)
        try:
            got = await self.consumer.getmany(tp, timeout_ms=0, max_records=left)
        except UNDECODABLE as exc:
            # Records decoded before the failure were dropped and the position kept: step
            # through the refetched batch one record at a time to deliver them and find
            # the exact offset that fails.
            self._careful[tp] = self._clock() + self.retry_s
            log.debug(
                "%s: %s-%d failed to decode (%r): reading it one record at a time",
                self.process,
                tp.topic,
                tp.partition,
                exc,
            )
            return []
        return list(got.get(tp, []))

    async def _step(self, tp: TopicPartition, left: int | None) -> list[ConsumerRecord]:
        """One record per call: each call that returns moves the position past its record,
        so a failing call leaves the position exactly at the batch that cannot decode."""
        recs: list[ConsumerRecord] = []
        while left is None or len(recs) < left:
            try:
                got = await self.consumer.getmany(tp, timeout_ms=0, max_records=1)
            except UNDECODABLE as exc:
                await self._stuck_at(tp, exc)
                break
            if not got.get(tp):
                break
            recs.extend(got[tp])
        return recs

    async def _wait(self, timeout_ms: int, max_records: int | None) -> Batches:
        """Wait for the next fetch and take one record of it.

        The consumer's own wait, over all partitions, but for one record: a failure then
        cannot have dropped records of another partition. It does not say which partition
        failed, so until one is found stuck (or `retry_s` passes) waits poll partition by
        partition instead. (One waiter per partition would name it at once, but each
        cancelled aiokafka `getmany` leaks its fetch counter and blinds the coordinator's
        max_poll_interval check for good.)
        """
        if self._probe_until is not None:
            return await self._poll(timeout_ms, max_records)
        try:
            got: Batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=1)
        except UNDECODABLE as exc:
            self._probe_until = self._clock() + self.retry_s
            # Expected while a stuck partition is fetched again; news otherwise.
            retrying = any(entry.retrying for entry in self._stuck.values())
            log.log(
                logging.DEBUG if retrying else logging.WARNING,
                "%s: a fetched batch cannot be decoded (%r): reading partitions one by one "
                "to find it",
                self.process,
                exc,
            )
            return {}
        return got

    async def _poll(self, timeout_ms: int, max_records: int | None) -> Batches:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while (left_s := deadline - loop.time()) > 0 and self._probe_until is not None:
            await asyncio.sleep(min(PROBE_POLL_S, left_s))
            records = await self._drain(max_records)
            if records:
                return records
        return {}

    def _read_fine(self, tp: TopicPartition, recs: list[ConsumerRecord]) -> None:
        """A stuck partition read past its offset: the batch decodes now."""
        entry = self._stuck.get(tp)
        if entry is None or recs[-1].offset < entry.offset:
            return
        self.forget(tp)
        log.info(
            "%s: %s-%d reads again past offset %d",
            self.process,
            tp.topic,
            tp.partition,
            entry.offset,
        )

    async def _stuck_at(self, tp: TopicPartition, exc: BaseException) -> None:
        """Pause `tp` at its position, set the gauge, and say so once, at ERROR."""
        try:
            offset = int(await self.consumer.position(tp))
        except IllegalStateError:
            self.forget(tp)  # revoked meanwhile: its new owner will meet the batch
            return
        self.consumer.pause(tp)
        self._careful.pop(tp, None)
        self._probe_until = None
        error = repr(exc)
        self._stuck[tp] = Stuck(offset, error, self._clock() + self.retry_s)
        self.gauge.labels(tp.topic, str(tp.partition)).set(offset)
        log.error(
            "%s: partition stuck: topic=%s partition=%d offset=%d: the fetched batch cannot "
            "be decoded (%s); partition paused, fetched again in %.0fs",
            self.process,
            tp.topic,
            tp.partition,
            offset,
            error,
            self.retry_s,
        )
