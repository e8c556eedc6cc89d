"""The classify worker: consume -> validate -> micro-batch -> classify -> produce -> commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from serving.backends.contract import Classifier, InferenceError
from serving.backends.warmup import warm_up
from streams.classify.batching import FetchGate, ValidatedBatch, collect, validate
from streams.classify.delivery import Delivery
from streams.classify.inference import BatchAbandonedError, Classified, InferenceStep
from streams.classify.outputs import PreparedBatch, dead_letter_outputs, labeled_outputs
from streams.classify.producer import output_producer, start_producer, transactional_id
from streams.classify.rebalance import SettleOnRevoke
from streams.classify.retry import backoff_s
from streams.health import Readiness
from streams.kafka.clients import group_consumer
from streams.kafka.stuck import StuckPartitions
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.messages import Limits, Rejection
from streams.metrics import WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)
# How often a worker logs where its partitions stand.
STATUS_EVERY_S = 30.0


@dataclass
class InFlight:
    """A validated batch whose classification has started."""

    records: Sequence[Any]
    batch: ValidatedBatch
    consumed_at: float
    classifying: asyncio.Future[tuple[Classified, list[Rejection]]]
    generation: int


class ClassifyWorker:
    """One member of the classify consumer group."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        metrics: WorkerMetrics,
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.metrics = metrics
        self.limits = Limits(
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            max_json_depth=settings.max_json_depth,
        )
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.transactional_id = transactional_id(settings)
        self.batch_lock = asyncio.Lock()
        self.assigned = asyncio.Event()
        self._stop = asyncio.Event()
        self._fetching = FetchGate()
        self.inference = InferenceStep(classifier, metrics, self._stop.is_set, self._fetching)
        self._delivery: asyncio.Task[None] | None = None
        self._ahead: InFlight | None = None
        # Counts rebalances: a batch started before one is not delivered after it.
        self._generation = 0
        self._warmed = False
        self._started = time.monotonic()
        self.readiness = readiness or Readiness()
        self.readiness.add("model", lambda: self._warmed)
        self.readiness.add("partitions", self.assigned.is_set)

    def stop(self) -> None:
        """Ask the worker to finish the batch in flight, commit and leave the group."""
        self._stop.set()

    async def run(self) -> None:
        """Run until `stop()`; raises ProduceFailedError if outputs cannot be acknowledged."""
        s = self.settings
        await ensure_topics(s, pipeline_topics(s))
        # Warm before joining: the group hands partitions only to a worker that is fast.
        if not await self._warm_up():
            return
        client_id = f"feedpulse-{self.worker_id}"
        consumer = group_consumer(s, s.group_id, client_id=client_id)
        producer = output_producer(s, client_id, self.transactional_id)
        consumer.subscribe([s.input_topic], listener=SettleOnRevoke(self))
        try:
            await start_producer(s, producer)
        except BaseException:
            await consumer.stop()  # never started, but it holds a client to close
            raise
        # Fetches go through it: an undecodable batch stalls its partition, not the worker.
        partitions = StuckPartitions(
            consumer, self.metrics.stuck, s.stuck_retry_s, process=f"classify {self.worker_id}"
        )
        try:
            await consumer.start()
            self._fetching.partitions = partitions
            delivery = Delivery(s, self.metrics, producer, consumer, self.transactional_id)
            log.info(
                "worker started: %s -> %s (group %s, %s)",
                s.input_topic,
                s.output_topic,
                s.group_id,
                "exactly-once" if s.exactly_once else "at-least-once",
            )
            await self._loop(partitions, delivery)
        finally:
            if self._ahead is not None:
                self._ahead.classifying.cancel()  # uncommitted: read again after a restart
            if self._delivery is not None and not self._delivery.done():
                # Cancelled mid-delivery: nothing is committed, the batch is redelivered.
                self._delivery.cancel()
                await asyncio.gather(self._delivery, return_exceptions=True)
            # Leaving the group (consumer.stop) hands our partitions over at once.
            await consumer.stop()
            await producer.stop()
            partitions.clear()  # this process no longer owns them: no stale stuck series
            log.info("worker stopped")

    async def _loop(self, partitions: StuckPartitions, delivery: Delivery) -> None:
        """Batch N+1 is queued for inference before batch N's outputs are built, and batch
        N is delivered while N+1 is classified: the model never waits on the loop."""
        s = self.settings
        consumer = partitions.consumer
        next_status = time.monotonic() + STATUS_EVERY_S
        while not self._stop.is_set():
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                await self._log_status(partitions)
            # Never hold the lock in getmany: during a rebalance getmany waits for the
            # new assignment, which waits for the revoke listener, which takes the lock.
            # With a batch in inference, only what is buffered is taken: its outputs must
            # not wait for the next batch to fill.
            records = await collect(
                partitions, s.max_batch, s.max_wait_ms, wait=self._ahead is None
            )
            if not records and self._ahead is None:
                continue
            async with self.batch_lock:
                # Records of partitions revoked meanwhile are left to their new owner
                # (uncommitted, so re-read there); the rest moved our position: keep them.
                owned = consumer.assignment()
                records = [r for r in records if TopicPartition(r.topic, r.partition) in owned]
                ahead, self._ahead = self._ahead, self.start(records) if records else None
                if ahead is not None and not await self._finish_and_deliver(ahead, delivery):
                    break
        await self._stop_ahead(delivery)
        await self.finish_delivery()

    async def _finish_and_deliver(self, ahead: InFlight, delivery: Delivery) -> bool:
        """Build the outputs of a classified batch and start delivering them; False if the
        worker is stopping with the batch abandoned."""
        try:
            prepared = await self.finish(ahead)
        except BatchAbandonedError as exc:
            log.warning("%s: %d records left uncommitted", exc, len(ahead.records))
            # Revoked: the new owners read these records again.
            return not exc.stopping
        # One delivery at a time keeps produce and commit order.
        await self.finish_delivery()
        self._delivery = asyncio.create_task(delivery.deliver(prepared))
        return True

    async def _stop_ahead(self, delivery: Delivery) -> None:
        """On stop, deliver the batch still in inference (or leave it uncommitted if
        inference is away)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            async with self.batch_lock:
                await self._finish_and_deliver(ahead, delivery)

    async def _log_status(self, partitions: StuckPartitions) -> None:
        """Where each owned partition stands: a stalled one shows as a position that stays."""
        consumer = partitions.consumer
        owned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        positions = {}
        for tp in owned:
            try:
                positions[f"{tp.topic}-{tp.partition}"] = await asyncio.wait_for(
                    consumer.position(tp), 1.0
                )
            except Exception:  # no position yet (being reset): say so, never stop the loop
                positions[f"{tp.topic}-{tp.partition}"] = None
        paused = sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.paused())
        log.info("positions %s; paused %s; stuck %s", positions, paused, partitions.stuck)

    def abandon_batch(self) -> None:
        """A rebalance is under way: give up waiting on inference for the batch in hand."""
        self.inference.abandon()

    def rebalanced(self) -> None:
        """The revocation holds the batch lock: later batches classify normally, and a
        batch started before it is dropped uncommitted (its partitions were reassigned)."""
        self._generation += 1
        self.inference.resume()

    async def _warm_up(self) -> bool:
        """Warm the model on representative batches, waiting for a backend that is away;
        False if asked to stop first."""
        s = self.settings
        attempt = 0
        while not self._stop.is_set():
            try:
                await warm_up(self.classifier, s.max_batch, s.warmup_batches)
            except InferenceError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                delay = backoff_s(attempt, 0.5)
                log.warning("warm-up: inference unavailable (%s); retry in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            self._warmed = True
            log.info("model ready %.2fs after the worker started", time.monotonic() - self._started)
            return True
        return False

    async def settle_delivery(self) -> None:
        """Wait until the in-flight delivery ends, leaving its outcome for the main loop."""
        if self._delivery is not None:
            await asyncio.wait({self._delivery})

    async def finish_delivery(self) -> None:
        """Wait for the batch being delivered; re-raises its failure."""
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await delivery

    def start(self, records: Sequence[Any]) -> InFlight:
        """Validate a batch and queue its classification."""
        consumed_at = time.time()
        self.metrics.consumed.inc(len(records))
        batch = validate(records, self.limits)
        classifying = asyncio.ensure_future(self.inference.classify(batch.items))
        return InFlight(records, batch, consumed_at, classifying, self._generation)

    async def finish(self, ahead: InFlight) -> PreparedBatch:
        """Await a started batch's classification and build its output records; raises
        BatchAbandonedError if a rebalance or a stop gave it up."""
        if ahead.generation != self._generation:
            # Classified or not, its partitions were reassigned: their owners (this worker
            # too, from the committed offsets) read the records again.
            ahead.classifying.cancel()
            await asyncio.gather(ahead.classifying, return_exceptions=True)
            raise BatchAbandonedError("partitions reassigned during inference", stopping=False)
        await asyncio.wait({ahead.classifying})
        if ahead.classifying.cancelled():
            raise BatchAbandonedError("inference cancelled", stopping=False)
        classified, failed = ahead.classifying.result()
        batch = ahead.batch
        batch.rejections.extend((r, "classify") for r in failed)
        stamps = {"consumed": ahead.consumed_at, "classified": time.time()}
        # The model that answered: the backend may have switched since, for a later batch.
        model = next((p.model for _, p in classified if p.model), None) or self.classifier.info
        self.metrics.serving(model.name, model.version, model.variant)
        outputs = labeled_outputs(self.settings, batch, classified, model, stamps, self.worker_id)
        outputs += dead_letter_outputs(self.settings, batch, batch.rejections)
        return PreparedBatch(ahead.records, outputs, classified, batch.rejections)

    async def prepare(self, records: Sequence[Any]) -> PreparedBatch:
        """Validate and classify a batch, and build its output records."""
        return await self.finish(self.start(records))
