"""The model watch worker: labeled items and late feedback in, drift events and
fine-tuning jobs out.

It reads the labeled topic, the feedback topic and the trainer's decisions with one
consumer. Feedback offsets are committed only past records that are joined or
dead-lettered, so feedback still waiting for its prediction is read again after a
restart rather than lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from online.feedback import INVALID_FEEDBACK, UNMATCHED_FEEDBACK, Feedback, parse_feedback
from online.jobs import Decision
from online.model_watch import ModelWatch, WatchConfig
from serving.model_store import load_version, serving_version
from serving.tasks import DEFAULT_TASKS, TaskHead
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.records import DLQ_HEADER_PREFIX, dead_letter_headers, dead_letter_record
from streams.kafka.stuck import StuckPartitions
from streams.kafka.topics import ensure_topics, jobs_record_limit
from streams.learning.records import INVALID_DECISION, INVALID_LABELED_RECORD, read_prediction
from streams.messages import Origin, Rejection
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

    def __init__(self, settings: Settings, watch: ModelWatch, metrics: WatchMetrics) -> None:
        self.settings = settings
        self.watch = watch
        self.metrics = metrics
        self.labels = {t.name: t.labels for t in watch.config.tasks}
        self._stop = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        # Embedding width per model version, from its first valid prediction.
        self._widths: dict[str, int] = {}

    def stop(self) -> None:
        """Finish the records in hand, commit and leave."""
        self._stop.set()

    async def run(self) -> None:
        """Consume, watch, publish; commit after what was published is acknowledged."""
        s = self.settings
        await ensure_topics(s, watch_topics(s))
        common = kafka_client_options(s)
        consumer = group_consumer(s, s.watch_group_id, auto_offset_reset="earliest")
        # Jobs are the largest records the watch writes; the jobs topic is created to match.
        producer = AIOKafkaProducer(
            **common, acks="all", linger_ms=5, max_request_size=jobs_record_limit(s)
        )
        consumer.subscribe([s.output_topic, s.feedback_topic, s.decisions_topic])
        await producer.start()
        self._producer = producer
        try:
            await consumer.start()
            # An undecodable batch stalls its own partition (reported), not the watch.
            partitions = StuckPartitions(
                consumer, self.metrics.stuck, s.stuck_retry_s, process="model watch"
            )
            log.info("%s: %s + %s", READY_MARKER, s.output_topic, s.feedback_topic)
            next_tick = time.monotonic()
            while not self._stop.is_set():
                got = await partitions.getmany(timeout_ms=POLL_MS, max_records=500)
                processed: dict[TopicPartition, int] = {}
                for tp, records in got.items():
                    for rec in records:
                        self._handle(rec)
                        processed[tp] = rec.offset + 1
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._tick()
                await self._flush()
                if processed:
                    await consumer.commit(self._commit_offsets(processed))
                self._update_metrics()
        finally:
            await consumer.stop()
            await producer.stop()
            log.info("model watch stopped")

    def _commit_offsets(self, processed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Never commit past feedback that still waits for its prediction."""
        offsets = dict(processed)
        for topic, partition, offset in self.watch.join.waiting_origins():
            tp = TopicPartition(topic, partition)
            if tp in offsets:
                offsets[tp] = min(offsets[tp], offset)
        return offsets

    def _handle(self, rec: Any) -> None:
        s = self.settings
        now = time.time()
        if rec.topic == s.output_topic:
            self._prediction(rec, now)
        elif rec.topic == s.feedback_topic:
            parsed = parse_feedback(rec.value, self.labels, (rec.topic, rec.partition, rec.offset))
            if isinstance(parsed, str):
                self.metrics.feedback.labels("invalid").inc()
                self._dead_letter(rec, INVALID_FEEDBACK, parsed)
                return
            before = self.watch.counts.joined
            events, overflow = self.watch.feedback(parsed, now)
            outcome = "joined" if self.watch.counts.joined > before else "waiting"
            self.metrics.feedback.labels(outcome).inc()
            self._publish_drift(events)
            if overflow is not None:
                self._dead_letter_feedback(overflow, "too much feedback is waiting for predictions")
        elif rec.topic == s.decisions_topic:
            try:
                decision = Decision.decode(rec.value)
            except ValueError as exc:
                self._unreadable(rec, INVALID_DECISION, str(exc))
                return
            self.metrics.decisions.labels(decision.action).inc()
            self.watch.decided(decision, now)

    def _prediction(self, rec: Any, now: float) -> None:
        parsed = read_prediction(rec.value, self.labels, self._widths, now)
        if isinstance(parsed, str):
            self._unreadable(rec, INVALID_LABELED_RECORD, parsed)
            return
        obs, scores = parsed
        if obs.embedding is not None:
            self._widths.setdefault(obs.model_version, obs.embedding.size)
        events, _ = self.watch.observe(obs, scores)
        self.metrics.predictions.inc()
        self._publish_drift(events)

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
        self._dead_letter(rec, reason, error)

    def _tick(self) -> None:
        s = self.settings
        now = time.time()
        for fb in self.watch.expire(now):
            self._dead_letter_feedback(
                fb, f"no prediction for id {fb.id!r} within {s.feedback_window_s:g} s"
            )
        base = serving_version(s.model_repository, s.model_name)
        job = self.watch.due_job(now, base)
        if job is not None:
            self.metrics.jobs.inc()
            self._send(s.jobs_topic, job.model.encode(), job.encode())

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        assert self._producer is not None
        # send() only queues; the futures are awaited in _flush before any commit.
        self._pending.append(
            asyncio.ensure_future(self._producer.send(topic, value, key=key, headers=headers))
        )

    async def _flush(self) -> None:
        """Wait until everything sent is acknowledged (raises if the broker refused)."""
        pending, self._pending = self._pending, []
        for queued in pending:
            delivery = await queued
            await delivery

    def _publish_drift(self, events: Sequence[dict[str, Any]]) -> None:
        for event in events:
            self.metrics.drift_events.labels(event["detector"]).inc()
            self._send(
                self.settings.drift_topic,
                self.settings.model_name.encode(),
                json.dumps(event, separators=(",", ":")).encode(),
            )

    def _dead_letter(self, rec: Any, reason: str, error: str) -> None:
        origin = Origin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
        rejection = Rejection(origin.derived_id, reason, error, origin)
        key, value, headers = dead_letter_record(
            rejection, rec.key, rec.value, "watch", self.settings.max_message_bytes
        )
        self._send(self.settings.dlq_topic, key, value, headers)

    def _dead_letter_feedback(self, fb: Feedback, error: str) -> None:
        """Unmatched feedback without text: its fields as the value, the reason in headers."""
        self.metrics.feedback.labels("dead_lettered").inc()
        topic, partition, offset = fb.origin or (self.settings.feedback_topic, -1, -1)
        origin = Origin(topic, partition, offset)
        rejection = Rejection(fb.id, UNMATCHED_FEEDBACK, error, origin)
        value = json.dumps({"id": fb.id, "task": fb.task, "label": fb.label}).encode()
        headers = [
            *dead_letter_headers(rejection, "watch"),
            (DLQ_HEADER_PREFIX + "rebuilt", b"true"),
        ]
        self._send(self.settings.dlq_topic, fb.id.encode(), value, headers)

    def _update_metrics(self) -> None:
        m, w = self.metrics, self.watch
        for det in w.detectors():
            state = det.state()
            m.drift_statistic.labels(det.name).set(state.get("statistic", 0.0))
            m.drift_threshold.labels(det.name).set(state.get("threshold", 0.0))
            m.drift_window.labels(det.name).set(state.get("window", 0.0))
            if "z" in state:
                m.drift_score.labels(det.name).set(state["z"])
        kept, waiting = w.join.sizes
        m.kept.set(kept)
        m.waiting.set(waiting)
        kept_bytes, waiting_bytes = w.join.bytes
        m.join_bytes.labels("predictions").set(kept_bytes)
        m.join_bytes.labels("waiting").set(waiting_bytes)
        for task in w.task_names():
            for learner, value in w.hybrid.accuracy(task).items():
                m.accuracy.labels(task, learner).set(value)
        if w.version is not None and w.version.isdigit():
            m.watched_version.set(int(w.version))


def watched_tasks(settings: Settings) -> tuple[TaskHead, ...]:
    """The served version's tasks (the defaults when no version exists yet)."""
    try:
        return load_version(settings.model_repository, settings.model_name).tasks
    except FileNotFoundError:
        return DEFAULT_TASKS
