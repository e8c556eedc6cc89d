"""`feedpulse trainer`: consume fine-tuning jobs one at a time, train, judge, publish.

Each job's decision (promoted, rejected, skipped, failed), with its numbers, goes to the
decisions topic before the job's offset is committed: a trainer that dies mid-job runs it
again. A job that had already been decided (its decision is recorded in the manifest of
the version it produced) is answered from that record, so a promotion made just before a
kill is still announced; a job whose base version is no longer served otherwise is skipped
as superseded. On start, leftover staging directories and old rejected candidates go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from online.jobs import Decision, FineTuneJob
from online.trainer import TrainerConfig, run_job
from serving.model_store import clean_repository
from serving.training.progress import TrainProgress
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.records import dead_letter_record
from streams.kafka.stuck import StuckPartitions
from streams.kafka.topics import ensure_topics, jobs_record_limit
from streams.learning.records import INVALID_JOB
from streams.messages import Origin, Rejection
from streams.metrics import stuck_partition_gauge
from streams.settings import Settings

log = logging.getLogger(__name__)
READY_MARKER = "trainer ready"
# Training holds a job for many minutes; the group must not evict the trainer meanwhile
# (heartbeats run in the background, polls do not).
MAX_POLL_INTERVAL_MS = 6 * 3600 * 1000


def log_progress(every_s: float = 15.0) -> TrainProgress:
    """Progress as periodic log lines (the trainer runs unattended)."""
    import time

    last: dict[str, float] = {}

    def report(stage: str, done: int, total: int, **figures: float) -> None:
        now = time.monotonic()
        if done < total and now - last.get(stage, 0.0) < every_s:
            return
        last[stage] = now
        shown = " ".join(f"{k}={v:.4g}" for k, v in figures.items())
        log.info("%s: %d/%d %s", stage, done, total, shown)

    return report


class TrainerWorker:
    """Runs fine-tuning jobs from the jobs topic until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        config_factory: Callable[[], TrainerConfig],
        progress: TrainProgress | None = None,
    ) -> None:
        self.settings = settings
        self._config_factory = config_factory
        self._config: TrainerConfig | None = None
        self._progress = progress or log_progress()
        self._stop = asyncio.Event()
        self.decisions: list[Decision] = []

    def stop(self) -> None:
        """Stop after the job in hand (a job in training finishes first)."""
        self._stop.set()

    async def run(self) -> None:
        """Consume jobs, run each, publish its decision, then commit it."""
        s = self.settings
        await asyncio.to_thread(self.clean)
        await ensure_topics(s, [s.jobs_topic, s.decisions_topic, s.dlq_topic])
        common = kafka_client_options(s)
        consumer = group_consumer(
            s,
            s.trainer_group_id,
            auto_offset_reset="earliest",
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            # One job can be as large as the jobs topic takes.
            max_partition_fetch_bytes=jobs_record_limit(s),
            fetch_max_bytes=2 * jobs_record_limit(s),
        )
        producer = AIOKafkaProducer(**common, acks="all")
        consumer.subscribe([s.jobs_topic])
        await producer.start()
        try:
            await consumer.start()
            # The trainer serves no metrics: a stuck partition is reported in its log.
            partitions = StuckPartitions(
                consumer,
                stuck_partition_gauge(CollectorRegistry()),
                s.stuck_retry_s,
                process="trainer",
            )
            log.info("%s: %s -> %s", READY_MARKER, s.jobs_topic, s.decisions_topic)
            while not self._stop.is_set():
                got = await partitions.getmany(timeout_ms=500, max_records=1)
                for tp, records in got.items():
                    for rec in records:
                        await self._handle(rec, producer)
                        await consumer.commit(
                            {TopicPartition(tp.topic, tp.partition): rec.offset + 1}
                        )
        finally:
            await consumer.stop()
            await producer.stop()
            log.info("trainer stopped")

    def clean(self) -> None:
        """Remove leftover staging directories and all but the newest
        `trainer_keep_rejected` rejected candidates, logging each with its size."""
        s = self.settings
        try:
            removed = clean_repository(s.model_repository, s.model_name, s.trainer_keep_rejected)
        except Exception:  # a repository that cannot be tidied can still be trained on
            log.exception("could not clean %s", s.model_repository / s.model_name)
            return
        for item in removed:
            log.info("removed %s %s (%.1f MB)", item.kind, item.path, item.size_bytes / 1e6)

    async def _handle(self, rec: Any, producer: AIOKafkaProducer) -> None:
        s = self.settings
        try:
            job = FineTuneJob.decode(rec.value)
        except ValueError as exc:
            origin = Origin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
            rejection = Rejection(origin.derived_id, INVALID_JOB, str(exc), origin)
            log.error("unreadable job at %s: %s", origin.derived_id, exc)
            key, value, headers = dead_letter_record(
                rejection, rec.key, rec.value, "trainer", s.max_message_bytes
            )
            await producer.send_and_wait(s.dlq_topic, value, key=key, headers=headers)
            return
        log.info(
            "job %s: fine-tune from version %d on %s",
            job.id,
            job.base_version,
            {t: len(r) for t, r in job.rows.items()},
        )
        try:
            if self._config is None:
                self._config = await asyncio.to_thread(self._config_factory)
            decision = await asyncio.to_thread(run_job, job, self._config, self._progress)
        except Exception as exc:  # a failed job is reported, and the next one still runs
            log.exception("job %s failed", job.id)
            decision = Decision(job.id, job.model, "failed", repr(exc)[:1000], job.base_version)
        log.warning(
            "job %s %s (candidate %s, base %d): %s; figures %s",
            job.id,
            decision.action,
            decision.candidate_version,
            decision.base_version,
            decision.reason,
            decision.figures,
        )
        await producer.send_and_wait(s.decisions_topic, decision.encode(), key=job.model.encode())
        self.decisions.append(decision)
