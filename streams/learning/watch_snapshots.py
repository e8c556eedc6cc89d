"""The watch worker's snapshots and the consumer positions they cover.

The state in memory has handled records up to `positions`; a snapshot of it, taken on the
event loop and written in a thread, covers the positions of the moment it was taken, and
only those (`covered`) are committed once it is on disk. A restart reads the snapshot back
and `ResumeAtSnapshot` seeks each assigned partition to its position where that is ahead
of the committed offset (a watch killed between the write and the commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from online.feedback_records import Feedback
from online.model_watch import ModelWatch, WatchConfig
from online.model_watch_state import restored_watch
from online.watch_state import (
    Snapshot,
    SnapshotError,
    move_aside,
    read_snapshot,
    remove_temporaries,
    write_snapshot,
)
from streams.metrics import WatchMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """A watch read back from its snapshot, with what the worker kept beside it."""

    watch: ModelWatch
    # Waiting feedback with no room in the restored join (to be dead-lettered).
    back: list[Feedback]
    # Embedding width per model version.
    widths: dict[str, int]


class WatchSnapshots:
    """One watch's snapshot file, the positions its state has handled, what the last
    snapshot written covers and what is committed."""

    def __init__(self, path: Path, model: str, metrics: WatchMetrics) -> None:
        self.path = path
        self.model = model
        self.metrics = metrics
        # Next offset per partition of what the state in memory has handled.
        self.positions: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        # The positions the last snapshot written covers: what may be committed.
        self.covered: dict[TopicPartition, int] = {}
        self.writing: asyncio.Task[dict[TopicPartition, int]] | None = None
        # State changed since the last snapshot was taken; one is wanted before the interval.
        self.dirty = False
        self.soon = False

    def handled(self, tp: TopicPartition, offset: int) -> None:
        """The state in memory has handled the record at `offset` of `tp`."""
        self.positions[tp] = offset + 1
        self.dirty = True

    async def load(self, config: WatchConfig, topics: Sequence[str]) -> tuple[str, Restored | None]:
        """The snapshot on disk, if any, for a watch of `config` reading `topics`. Returns the
        outcome with the restored watch: `restored`, `fresh` (none), `mismatch` (a snapshot
        of other topics: moved aside as `.mismatch-<ts>`) or `corrupt` (unreadable, damaged,
        another format version or model: moved aside as `.corrupt-<ts>`)."""
        for tmp in remove_temporaries(self.path):
            log.info("removed a half-written snapshot %s", tmp)
        if not self.path.exists():
            return "fresh", None
        outcome = "fresh"
        try:
            snap = await asyncio.to_thread(read_snapshot, self.path)
            if snap.model != config.model:
                raise SnapshotError(f"a snapshot of model {snap.model!r}")
            worker = snap.state.get("worker", {})
            saved_topics = worker.get("topics")
            if saved_topics != list(topics):
                # Its positions and contents belong to other topics (another setup
                # sharing the state directory): kept aside, not used.
                outcome = "mismatch"
                raise SnapshotError(f"a snapshot of topics {saved_topics}, not {list(topics)}")
            watch, back = restored_watch(config, snap.state)
            widths = worker.get("widths", {})
        except (OSError, SnapshotError) as exc:
            outcome = "mismatch" if outcome == "mismatch" else "corrupt"
            self._move_aside(outcome, exc)
            return outcome, None
        restored = Restored(watch, back, {str(k): int(v) for k, v in widths.items()})
        self.positions = {TopicPartition(t, p): o for (t, p), o in snap.positions.items()}
        self.covered = dict(self.positions)
        self._log_restored(snap, watch)
        return "restored", restored

    def _move_aside(self, outcome: str, exc: Exception) -> None:
        path = self.path
        try:
            aside = move_aside(path, outcome)
        except OSError as move_exc:
            # The next snapshot replaces it anyway.
            aside = path
            log.error("could not move %s aside: %s", path, move_exc)
        log.warning(
            "model watch snapshot %s unusable (%s): moved to %s, starting fresh",
            path,
            exc,
            aside,
        )

    def _log_restored(self, snap: Snapshot, watch: ModelWatch) -> None:
        kept, waiting = watch.join.sizes
        log.info(
            "model watch state restored from %s (written %.0f s ago): %d predictions "
            "kept, %d ids with feedback waiting, %d rows, job in flight %s, "
            "positions %s",
            self.path,
            time.time() - snap.written_at,
            kept,
            waiting,
            sum(len(r) for r in watch.rows.values()),
            watch.policy.in_flight,
            {f"{tp.topic}-{tp.partition}": o for tp, o in self.positions.items()},
        )

    def start(self, capture: Callable[[], dict[str, Any]]) -> None:
        """Copy the state on the loop (`capture`), write it in a thread (see `finish`)."""
        self.soon = False
        if not self.dirty:
            return
        began = time.perf_counter()
        state = capture()
        positions = dict(self.positions)
        self.metrics.snapshot_capture_seconds.observe(time.perf_counter() - began)
        self.dirty = False
        self.writing = asyncio.ensure_future(self._write(state, positions, began))

    async def _write(
        self, state: dict[str, Any], positions: dict[TopicPartition, int], began: float
    ) -> dict[TopicPartition, int]:
        rows = [(tp.topic, tp.partition, o) for tp, o in sorted(positions.items())]
        size = await asyncio.to_thread(write_snapshot, self.path, self.model, rows, state)
        self.metrics.snapshot_seconds.observe(time.perf_counter() - began)
        self.metrics.snapshot_bytes.set(size)
        self.metrics.snapshot_time.set(time.time())
        return positions

    async def finish(self, consumer: AIOKafkaConsumer) -> None:
        """Wait for the snapshot being written; commit the offsets it covers."""
        assert self.writing is not None
        task, self.writing = self.writing, None
        try:
            self.covered = await task
        except Exception:
            # Nothing is committed: a restart resumes from the previous snapshot.
            self.metrics.snapshot_failures.inc()
            self.dirty = True
            log.exception("model watch snapshot to %s failed", self.path)
            return
        await self.commit_covered(consumer)

    async def stop(self, consumer: AIOKafkaConsumer, capture: Callable[[], dict[str, Any]]) -> None:
        """A clean stop: the last state on disk and committed."""
        if self.writing is not None:
            await self.finish(consumer)
        self.start(capture)
        if self.writing is not None:
            await self.finish(consumer)
        else:
            await self.commit_covered(consumer)

    async def settle(self) -> None:
        """Let a write in progress finish (no commit): no temp file is left behind."""
        if self.writing is not None:
            await asyncio.wait([self.writing])

    async def commit_covered(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the positions of the last snapshot written, where not yet committed."""
        assigned = consumer.assignment()
        offsets = {
            tp: o
            for tp, o in self.covered.items()
            if tp in assigned and self.committed.get(tp) != o
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The snapshot holds these records: the next one commits them.
            log.warning("commit after the snapshot failed: %s", exc)
            return
        self.committed.update(offsets)

    def note_assignment(self, tp: TopicPartition, committed: int | None) -> int | None:
        """Where an assigned partition should resume: the state's position when it is ahead
        of the committed offset, else None (the committed offset, which the state then
        counts from)."""
        position = self.positions.get(tp)
        if committed is not None:
            self.committed[tp] = committed
        if position is None:
            return None
        if committed is None or position > committed:
            return position
        if position < committed:
            log.warning(
                "%s-%d: committed offset %d is past the snapshot's %d: records in between "
                "were handled by a state that is not on disk",
                tp.topic,
                tp.partition,
                committed,
                position,
            )
            self.positions[tp] = committed
        return None


class ResumeAtSnapshot(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks each assigned partition to the snapshot's position when it is ahead of the
    committed offset (a watch killed between writing a snapshot and committing)."""

    def __init__(self, snapshots: WatchSnapshots, consumer: AIOKafkaConsumer) -> None:
        self.snapshots = snapshots
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to save: the snapshot holds the state."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Seek where the state on disk left off."""
        for tp in assigned:
            committed = await self.consumer.committed(tp)
            position = self.snapshots.note_assignment(tp, committed)
            if position is not None:
                log.info(
                    "%s-%d: resuming at the snapshot's offset %d (committed: %s)",
                    tp.topic,
                    tp.partition,
                    position,
                    committed,
                )
                self.consumer.seek(tp, position)
