"""The model watch worker: labeled items and late feedback in, drift events and
fine-tuning jobs out.

It reads the labeled topic, the feedback topic and the trainer's decisions with one
consumer. Its state (join, rows, policy, detectors, hybrid head) is snapshotted to
`watch_state_dir` every `watch_snapshot_s`, after a job is queued or decided, and on a
clean stop, with the consumer positions it covers; offsets are committed only up to what
the last written snapshot covers. A restart loads the snapshot and seeks each partition to
its position where that is ahead of the committed offset (killed between the write and the
commit), so nothing the state on disk lacks was committed and nothing it holds is read
twice.

The snapshot bookkeeping is `watch_snapshots`, the sends `watch_outbox`, the gauges
`watch_metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from online.feedback_records import INVALID_FEEDBACK, parse_feedback
from online.jobs import Decision
from online.model_watch import ModelWatch, WatchConfig
from online.model_watch_state import watch_snapshot
from online.watch_state import snapshot_path
from serving.model_store import load_version, serving_version
from serving.tasks import DEFAULT_TASKS, TaskHead
from streams.health import Readiness
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.stuck import StuckPartitions
from streams.kafka.topics import ensure_topics, jobs_record_limit
from streams.learning.records import INVALID_DECISION, INVALID_LABELED_RECORD, read_prediction
from streams.learning.watch_metrics import export_watch_metrics
from streams.learning.watch_outbox import WatchOutbox
from streams.learning.watch_snapshots import ResumeAtSnapshot, WatchSnapshots
from streams.metrics import WatchMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)
POLL_MS = 500
TICK_S = 1.0
READY_MARKER = "model watch ready"


def watch_config(settings: Settings, tasks: Sequence[TaskHead]) -> WatchConfig:
    """The watch's knobs from the settings."""
    s = settings
    return WatchConfig(
        model=s.model_name,
        tasks=tuple(tasks),
        drift_delta=s.drift_delta,
        drift_grace=s.drift_grace,
        mmd_reference=s.mmd_reference,
        mmd_window=s.mmd_window,
        mmd_check_every=s.mmd_check_every,
        mmd_z=s.mmd_z,
        mmd_permutations=s.mmd_permutations,
        hybrid_learning_rate=s.hybrid_learning_rate,
        hybrid_window=s.hybrid_window,
        feedback_window_s=s.feedback_window_s,
        feedback_max_items=s.feedback_max_items,
        feedback_max_bytes=s.feedback_max_bytes,
        feedback_waiting_max_bytes=s.feedback_waiting_max_bytes,
        feedback_keep_rows=s.feedback_keep_rows,
        finetune_min_feedback=s.finetune_min_feedback,
        finetune_max_rows=s.finetune_max_rows,
        finetune_cooldown_s=s.finetune_cooldown_s,
        finetune_volume_trigger=s.finetune_volume_trigger,
        finetune_retry_backoff_s=s.finetune_retry_backoff_s,
        jobs_max_bytes=s.jobs_max_bytes,
    )


def watch_topics(settings: Settings) -> list[str]:
    """Every topic the watch reads or writes."""
    s = settings
    return [
        s.output_topic,
        s.feedback_topic,
        s.decisions_topic,
        s.drift_topic,
        s.jobs_topic,
        s.dlq_topic,
    ]


class WatchWorker:
    """Runs a ModelWatch against the broker until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        watch: ModelWatch,
        metrics: WatchMetrics,
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.watch = watch
        self.metrics = metrics
        self.tasks = watch.config.tasks
        self.heads = {t.name: t for t in watch.config.tasks}
        self._stop = asyncio.Event()
        self.outbox = WatchOutbox(settings, metrics)
        # Embedding width per model version, from its first valid prediction.
        self._widths: dict[str, int] = {}
        self.snapshots = WatchSnapshots(
            snapshot_path(settings.watch_state_dir, watch.config.model),
            watch.config.model,
            metrics,
        )
        # Ready once its state is restored and it consumes.
        self._consuming = False
        (readiness or Readiness()).add("consuming", lambda: self._consuming)

    def stop(self) -> None:
        """Finish the records in hand, snapshot, commit and leave."""
        self._stop.set()

    async def run(self) -> None:
        """Consume, watch, publish; snapshot the state, then commit what it covers."""
        s = self.settings
        snaps = self.snapshots
        await ensure_topics(s, watch_topics(s))
        common = kafka_client_options(s)
        consumer = group_consumer(s, s.watch_group_id, auto_offset_reset="earliest")
        # Jobs are the largest records the watch writes; the jobs topic is created to match.
        producer = AIOKafkaProducer(
            **common, acks="all", linger_ms=5, max_request_size=jobs_record_limit(s)
        )
        consumer.subscribe(
            [s.output_topic, s.feedback_topic, s.decisions_topic],
            listener=ResumeAtSnapshot(snaps, consumer),
        )
        await producer.start()
        self.outbox.producer = producer
        try:
            await self.restore()
            await self.outbox.flush()
            export_watch_metrics(self.metrics, self.watch)
            await consumer.start()
            # An undecodable batch stalls its own partition (reported), not the watch.
            partitions = StuckPartitions(
                consumer, self.metrics.stuck, s.stuck_retry_s, process="model watch"
            )
            log.info("%s: %s + %s", READY_MARKER, s.output_topic, s.feedback_topic)
            self._consuming = True
            next_tick = time.monotonic()
            next_snapshot = time.monotonic() + s.watch_snapshot_s
            while not self._stop.is_set():
                got = await partitions.getmany(timeout_ms=POLL_MS, max_records=500)
                for tp, records in got.items():
                    for rec in records:
                        self._handle(rec)
                        snaps.handled(tp, rec.offset)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._tick()
                # Everything a snapshot covers has its outputs acknowledged first.
                await self.outbox.flush()
                if snaps.writing is not None and snaps.writing.done():
                    await snaps.finish(consumer)
                due = snaps.soon or time.monotonic() >= next_snapshot
                if due and snaps.writing is None:
                    next_snapshot = time.monotonic() + s.watch_snapshot_s
                    snaps.start(self._capture)
                export_watch_metrics(self.metrics, self.watch)
            await snaps.stop(consumer, self._capture)
        finally:
            await snaps.settle()
            await consumer.stop()
            await producer.stop()
            log.info("model watch stopped")

    def _topics(self) -> list[str]:
        s = self.settings
        return [s.output_topic, s.feedback_topic, s.decisions_topic]

    async def restore(self) -> str:
        """Resume from the snapshot on disk, if any. Returns the outcome: `restored`,
        `fresh` (none), `mismatch` (a snapshot of other topics: moved aside as
        `.mismatch-<ts>`) or `corrupt` (unreadable, damaged, another format version or
        model: moved aside as `.corrupt-<ts>`); the watch starts fresh rather than crash."""
        outcome, restored = await self.snapshots.load(self.watch.config, self._topics())
        if restored is not None:
            self.watch = restored.watch
            self._widths = restored.widths
            for fb in restored.back:
                self.outbox.dead_letter_feedback(fb, "no room for it in the restored join")
        self.metrics.restored.labels(outcome).inc()
        return outcome

    def _capture(self) -> dict[str, Any]:
        """The state to snapshot: the watch's, with the worker's own beside it."""
        state = watch_snapshot(self.watch)
        state["worker"] = {"widths": dict(self._widths), "topics": self._topics()}
        return state

    def _handle(self, rec: Any) -> None:
        s = self.settings
        now = time.time()
        if rec.topic == s.output_topic:
            self._prediction(rec, now)
        elif rec.topic == s.feedback_topic:
            parsed = parse_feedback(rec.value, self.tasks, (rec.topic, rec.partition, rec.offset))
            if isinstance(parsed, str):
                self.metrics.feedback.labels("invalid").inc()
                self.outbox.dead_letter(rec, INVALID_FEEDBACK, parsed)
                return
            before = self.watch.counts.joined
            events, overflow = self.watch.feedback(parsed, now)
            outcome = "joined" if self.watch.counts.joined > before else "waiting"
            self.metrics.feedback.labels(outcome).inc()
            self.outbox.drift(events)
            if overflow is not None:
                self.outbox.dead_letter_feedback(
                    overflow, "too much feedback is waiting for predictions"
                )
        elif rec.topic == s.decisions_topic:
            try:
                decision = Decision.decode(rec.value)
            except ValueError as exc:
                self._unreadable(rec, INVALID_DECISION, str(exc))
                return
            self.metrics.decisions.labels(decision.action).inc()
            in_flight = self.watch.policy.in_flight
            self.watch.decided(decision, now)
            # The end of a job (cooldown, back-off) must survive a restart soon.
            self.snapshots.soon |= in_flight is not None and self.watch.policy.in_flight is None

    def _prediction(self, rec: Any, now: float) -> None:
        parsed = read_prediction(rec.value, self.heads, self._widths, now)
        if isinstance(parsed, str):
            self._unreadable(rec, INVALID_LABELED_RECORD, parsed)
            return
        obs, scores = parsed
        if obs.embedding is not None:
            self._widths.setdefault(obs.model_version, obs.embedding.size)
        events, _ = self.watch.observe(obs, scores)
        self.metrics.predictions.inc()
        self.outbox.drift(events)

    def _unreadable(self, rec: Any, reason: str, error: str) -> None:
        self.metrics.unreadable.labels(rec.topic).inc()
        log.warning(
            "unreadable record %s-%d@%d (%s): %s",
            rec.topic,
            rec.partition,
            rec.offset,
            reason,
            error,
        )
        self.outbox.dead_letter(rec, reason, error)

    def _tick(self) -> None:
        s = self.settings
        now = time.time()
        for fb in self.watch.expire(now):
            self.snapshots.dirty = True
            self.outbox.dead_letter_feedback(
                fb, f"no prediction for id {fb.id!r} within {s.feedback_window_s:g} s"
            )
        base = serving_version(s.model_repository, s.model_name)
        job = self.watch.due_job(now, base)
        if job is not None:
            self.metrics.jobs.inc()
            self.outbox.send(s.jobs_topic, job.model.encode(), job.encode())
            # A job in flight lost to a restart would be queued twice.
            self.snapshots.dirty = self.snapshots.soon = True


def watched_tasks(settings: Settings) -> tuple[TaskHead, ...]:
    """The served version's tasks (the defaults when no version exists yet)."""
    try:
        return load_version(settings.model_repository, settings.model_name).tasks
    except FileNotFoundError:
        return DEFAULT_TASKS
