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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
)

from serving.backends.contract import Classifier, InferenceError, Prediction
from streams.kafka.clients import group_consumer, kafka_client_options
from streams.kafka.records import (
    Headers,
    dead_letter_headers,
    dead_letter_value,
    id_headers,
    labeled_value,
    output_key,
)
from streams.kafka.topics import ensure_topics, output_max_bytes, pipeline_topics
from streams.messages import (
    CLASSIFY_FAILED,
    OUTPUT_TOO_LARGE,
    FeedItem,
    Limits,
    Origin,
    Rejection,
    parse_record,
)
from streams.metrics import WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500
# Logged when the worker owns partitions; the demo waits for it before publishing.
READY_MARKER = "partitions assigned:"
PRODUCE_ATTEMPTS = 5
MAX_BACKOFF_S = 5.0
# What is kept of the input when even the dead letter standing in for its output is refused.
OVERSIZE_KEEP_BYTES = 16 * 1024
# How long a transactional producer may take to get its producer id before the broker is
# taken for one without transactions (some never answer, others answer with an error).
TRANSACTIONS_START_S = 30.0


class BatchAbandonedError(Exception):
    """The worker stops before this batch could be classified; it stays uncommitted."""


class ProduceFailedError(RuntimeError):
    """Outputs could not be acknowledged; the batch stays uncommitted and will be redelivered."""


class TransactionsUnsupportedError(RuntimeError):
    """exactly_once is on, but the broker cannot start a transactional producer."""


@dataclass(frozen=True)
class Output:
    """One record to produce, and the input it accounts for."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    item_id: str
    origin: Origin
    # The input's bytes: what a dead letter standing in for this output must carry.
    original: bytes | None = None


@dataclass
class PreparedBatch:
    """A classified batch whose outputs are ready to produce."""

    records: Sequence[Any]
    outputs: list[Output]
    classified: list[tuple[FeedItem, Prediction]]
    rejections: list[tuple[Rejection, str]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Let the batch in flight finish and commit before partitions move."""

    def __init__(self, worker: ClassifyWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._worker.batch_lock:
            await self._worker.settle_delivery()
            log.info(
                "partitions revoked: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in revoked)
            )
        self._worker.assigned.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("%s %s", READY_MARKER, sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        if assigned:
            self._worker.assigned.set()


class ClassifyWorker:
    """One member of the classify consumer group."""

    def __init__(self, settings: Settings, classifier: Classifier, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.classifier = classifier
        self.metrics = metrics
        self.limits = Limits(
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            max_json_depth=settings.max_json_depth,
        )
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # Stable across restarts of the same worker (in a container: its hostname and pid 1),
        # so a restarted worker fences the transactions of its dead predecessor; distinct
        # for several worker processes on one host, which must not fence each other.
        self.transactional_id = (
            f"{settings.transactional_id_prefix}-{socket.gethostname()}-{os.getpid()}"
            if settings.exactly_once
            else None
        )
        self.batch_lock = asyncio.Lock()
        self.assigned = asyncio.Event()
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._paused = False

    def stop(self) -> None:
        """Ask the worker to finish the batch in flight, commit and leave the group."""
        self._stop.set()

    async def run(self) -> None:
        """Run until `stop()`; raises ProduceFailedError if outputs cannot be acknowledged."""
        s = self.settings
        await ensure_topics(s, pipeline_topics(s))
        common = {**kafka_client_options(s), "client_id": f"feedpulse-{self.worker_id}"}
        consumer = group_consumer(s, s.group_id, client_id=common["client_id"])
        producer = AIOKafkaProducer(
            **common,
            acks="all",
            linger_ms=5,
            max_request_size=output_max_bytes(s),
            **self._transactional_options(),
        )
        consumer.subscribe([s.input_topic], listener=_Rebalance(self))
        try:
            await self._start_producer(producer)
        except BaseException:
            await consumer.stop()  # never started, but it holds a client to close
            raise
        try:
            await consumer.start()
            self._consumer, self._producer = consumer, producer
            log.info(
                "worker started: %s -> %s (group %s, %s)",
                s.input_topic,
                s.output_topic,
                s.group_id,
                "exactly-once" if s.exactly_once else "at-least-once",
            )
            while not self._stop.is_set():
                # Never hold the lock in getmany: during a rebalance getmany waits for the
                # new assignment, which waits for the revoke listener, which takes the lock.
                records = await self._collect(consumer)
                if not records:
                    continue
                async with self.batch_lock:
                    # Records of partitions revoked meanwhile are left to their new owner
                    # (uncommitted, so re-read there); the rest moved our position: keep them.
                    owned = consumer.assignment()
                    records = [r for r in records if TopicPartition(r.topic, r.partition) in owned]
                    if not records:
                        continue
                    try:
                        prepared = await self._prepare(records)
                    except BatchAbandonedError as exc:
                        log.warning("%s: %d records left uncommitted", exc, len(records))
                        break
                    # Batch N is delivered while batch N+1 is fetched and classified;
                    # one delivery at a time keeps produce and commit order.
                    await self.finish_delivery()
                    self._delivery = asyncio.create_task(self._deliver(prepared))
            await self.finish_delivery()
        finally:
            if self._delivery is not None and not self._delivery.done():
                # Cancelled mid-delivery: nothing is committed, the batch is redelivered.
                self._delivery.cancel()
                await asyncio.gather(self._delivery, return_exceptions=True)
            # Leaving the group (consumer.stop) hands our partitions over at once.
            await consumer.stop()
            await producer.stop()
            log.info("worker stopped")

    def _transactional_options(self) -> dict[str, Any]:
        """Producer options for exactly-once; none for at-least-once."""
        if self.transactional_id is None:
            return {}
        # aiokafka runs transactions only on an idempotent producer.
        return {"transactional_id": self.transactional_id, "enable_idempotence": True}

    async def _start_producer(self, producer: AIOKafkaProducer) -> None:
        """Start the producer; a transactional one fails fast on a broker without transactions."""
        if not self.settings.exactly_once:
            await producer.start()
            return
        try:
            await asyncio.wait_for(producer.start(), TRANSACTIONS_START_S)
        except KafkaConnectionError:
            await producer.stop()
            raise
        except (KafkaError, TimeoutError) as exc:
            await producer.stop()
            raise TransactionsUnsupportedError(
                f"exactly_once is on, but the broker at {self.settings.bootstrap_servers} "
                f"does not support transactions (could not get a transactional producer id: "
                f"{exc!r}); use a broker with transactions (Apache Kafka >= 0.11) or turn "
                "exactly_once off for at-least-once delivery"
            ) from None

    async def _collect(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """Gather up to `max_batch` records, flushing `max_wait_ms` after the first arrives."""
        s = self.settings
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < s.max_batch:
            if deadline is None:
                timeout_ms = IDLE_POLL_MS
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            got = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=s.max_batch - len(records)
            )
            for recs in got.values():
                records.extend(recs)
            if not records:
                return records  # idle: give the loop a chance to see stop()
            if deadline is None:
                deadline = time.monotonic() + s.max_wait_ms / 1000
            if time.monotonic() >= deadline:
                break
        return records

    def _pause_fetching(self) -> None:
        if self._consumer is not None and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning("paused fetching until inference is back")

    def _resume_fetching(self) -> None:
        if self._consumer is not None and self._paused:
            self._consumer.resume(*self._consumer.paused())
            self._paused = False
            log.info("inference is back: fetching resumed")

    async def settle_delivery(self) -> None:
        """Wait until the in-flight delivery ends, leaving its outcome for the main loop."""
        if self._delivery is not None:
            await asyncio.wait({self._delivery})

    async def finish_delivery(self) -> None:
        """Wait for the batch being delivered; re-raises its failure."""
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await delivery

    async def _prepare(self, records: Sequence[Any]) -> PreparedBatch:
        """Validate and classify a batch, and build its output records."""
        consumed_at = time.time()
        self.metrics.consumed.inc(len(records))
        values: dict[tuple[str, int, int], bytes | None] = {}
        items: list[FeedItem] = []
        rejections: list[tuple[Rejection, str]] = []
        for rec in records:
            origin = Origin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
            values[(rec.topic, rec.partition, rec.offset)] = rec.value
            parsed = parse_record(rec.value, origin, self.limits)
            if isinstance(parsed, Rejection):
                rejections.append((parsed, "validate"))
            else:
                items.append(parsed)

        classified, failed = await self._classify(items)
        rejections.extend((r, "classify") for r in failed)
        classified_at = time.time()

        model = self.classifier.info
        self.metrics.serving(model.name, model.version, model.variant)
        outputs: list[Output] = []
        for item, pred in classified:
            stamps = {"consumed": consumed_at, "classified": classified_at}
            labeled = labeled_value(
                item, pred, model, stamps, self.worker_id, embedding=self.settings.output_embedding
            )
            key = output_key(item.id, item.origin)
            o = item.origin
            original = values[(o.topic, o.partition, o.offset)]
            outputs.append(
                Output(
                    self.settings.output_topic,
                    key,
                    labeled,
                    id_headers(item.id),
                    item.id,
                    o,
                    original,
                )
            )
        for rej, stage in rejections:
            o = rej.origin
            original = values[(o.topic, o.partition, o.offset)]
            value, extra = dead_letter_value(original, self.settings.max_message_bytes)
            headers = dead_letter_headers(rej, stage) + extra
            key = output_key(rej.id, o)
            outputs.append(Output(self.settings.dlq_topic, key, value, headers, rej.id, o))
        return PreparedBatch(records, outputs, classified, rejections)

    async def _deliver(self, batch: PreparedBatch) -> None:
        """Produce, await every acknowledgement, then commit the offsets they cover."""
        if self.settings.exactly_once:
            await self._deliver_transaction(batch)
            return
        await self._produce_all(batch.outputs)
        acked_at = time.time()
        await self._commit(batch.records)
        self._record_metrics(batch.records, batch.classified, batch.rejections, acked_at)

    async def _deliver_transaction(self, batch: PreparedBatch) -> None:
        """Outputs and the batch's offsets in one transaction: all visible, or none.

        A failed attempt is aborted and the whole batch is sent again in a new transaction;
        after the last attempt the worker stops with nothing committed, and the group
        redelivers the batch. Offsets are never committed outside a transaction.
        """
        assert self._producer is not None
        producer = self._producer
        pending = list(batch.outputs)
        offsets = next_offsets(batch.records)
        for attempt in range(1, PRODUCE_ATTEMPTS + 1):
            await producer.begin_transaction()
            try:
                futures = [await self._send(i, pending) for i in range(len(pending))]
                results = await asyncio.gather(*futures, return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)]
                if not failed:
                    await producer.send_offsets_to_transaction(offsets, self.settings.group_id)
                    await producer.commit_transaction()
                    self._record_metrics(
                        batch.records, batch.classified, batch.rejections, time.time()
                    )
                    return
                for i, result in enumerate(results):
                    if isinstance(result, MessageSizeTooLargeError):
                        pending[i] = self._oversized(pending[i], result)
                error: BaseException = failed[0]
            except ProducerFenced as exc:
                raise ProduceFailedError(
                    f"fenced: another producer took transactional id {self.transactional_id}"
                ) from exc
            except asyncio.CancelledError:
                # Stopped mid-transaction: abort now rather than leave read_committed
                # consumers stalled until the broker times the transaction out.
                with contextlib.suppress(KafkaError, TimeoutError):
                    await asyncio.wait_for(producer.abort_transaction(), 5)
                raise
            except KafkaError as exc:
                error = exc
            with contextlib.suppress(KafkaError):
                await producer.abort_transaction()
            self.metrics.retries.labels("produce").inc()
            log.warning("transaction aborted (%r); attempt %d", error, attempt)
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.2 * 2**attempt))
        raise ProduceFailedError(
            f"transaction of {len(pending)} outputs aborted after {PRODUCE_ATTEMPTS} attempts"
        )

    async def _classify(
        self, items: Sequence[FeedItem]
    ) -> tuple[list[tuple[FeedItem, Prediction]], list[Rejection]]:
        """Classify the batch; retriable errors are retried, others fall back item by item."""
        if not items:
            return [], []
        texts = [it.text for it in items]
        started = time.perf_counter()
        attempt = 0
        try:
            while True:
                try:
                    preds = await self.classifier.classify(texts)
                    self.metrics.inference_seconds.observe(time.perf_counter() - started)
                    self.metrics.batch_size.observe(len(items))
                    return list(zip(items, preds, strict=True)), []
                except InferenceError as exc:
                    if not exc.retriable:
                        log.warning("batch of %d failed (%s): one by one", len(items), exc)
                        break
                    if self._stop.is_set():
                        raise BatchAbandonedError(
                            "stopping while inference is unavailable"
                        ) from exc
                    attempt += 1
                    if attempt == 1:
                        # Stop fetching while the server is away: memory stays bounded and
                        # nothing is dead-lettered for the server's absence.
                        self._pause_fetching()
                    self.metrics.retries.labels("classify").inc()
                    delay = min(MAX_BACKOFF_S, 0.1 * 2**attempt)
                    log.warning(
                        "inference unavailable (%s); retry %d in %.1fs", exc, attempt, delay
                    )
                    await asyncio.sleep(delay)
                except Exception as exc:  # a backend bug on odd input must not stop the stream
                    log.warning("batch of %d failed (%r): one by one", len(items), exc)
                    break
        finally:
            self._resume_fetching()
        return await self._classify_one_by_one(items)

    async def _classify_one_by_one(
        self, items: Sequence[FeedItem]
    ) -> tuple[list[tuple[FeedItem, Prediction]], list[Rejection]]:
        done: list[tuple[FeedItem, Prediction]] = []
        failed: list[Rejection] = []
        for item in items:
            try:
                (pred,) = await self.classifier.classify([item.text])
                done.append((item, pred))
            except Exception as exc:  # one poisoned item must not stop the stream
                failed.append(Rejection(item.id, CLASSIFY_FAILED, str(exc), item.origin))
        return done, failed

    async def _produce_all(self, outputs: Sequence[Output]) -> None:
        """Send every output and wait for the broker's acknowledgement of each.

        After a failure everything from the first unacknowledged output on is sent again,
        in order, so a retry never overtakes a later output of the same partition.
        """
        pending = list(outputs)
        for attempt in range(1, PRODUCE_ATTEMPTS + 1):
            results = await asyncio.gather(
                *[await self._send(i, pending) for i in range(len(pending))],
                return_exceptions=True,
            )
            failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
            if not failed:
                return
            for i in failed:
                if isinstance(results[i], MessageSizeTooLargeError):
                    pending[i] = self._oversized(pending[i], results[i])
            pending = pending[failed[0] :]
            self.metrics.retries.labels("produce").inc()
            log.warning(
                "%d outputs not acknowledged (%r); attempt %d",
                len(failed),
                results[failed[0]],
                attempt,
            )
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.2 * 2**attempt))
        raise ProduceFailedError(
            f"{len(pending)} outputs unacknowledged after {PRODUCE_ATTEMPTS} attempts"
        )

    async def _send(self, index: int, pending: list[Output]) -> asyncio.Future[Any]:
        """Queue one output; one the client refuses as too large becomes a dead letter."""
        assert self._producer is not None
        out = pending[index]
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                out.topic, value=out.value, key=out.key, headers=out.headers
            )
        except MessageSizeTooLargeError as exc:
            out = pending[index] = self._oversized(out, exc)
            future = await self._producer.send(
                out.topic, value=out.value, key=out.key, headers=out.headers
            )
        return future

    def _oversized(self, out: Output, error: BaseException) -> Output:
        """A dead letter with the input's original bytes, standing in for an output too
        large to produce; cut to a small prefix if even the dead letter was refused."""
        self.metrics.dead_lettered.labels(OUTPUT_TOO_LARGE).inc()
        log.warning("output for %s too large (%s): dead-lettering it", out.item_id[:200], error)
        rejection = Rejection(out.item_id[:1024], OUTPUT_TOO_LARGE, str(error)[:1024], out.origin)
        refused_again = out.topic == self.settings.dlq_topic
        keep = OVERSIZE_KEEP_BYTES if refused_again else self.settings.max_message_bytes
        value, extra = dead_letter_value(out.original, keep)
        headers = dead_letter_headers(rejection, "produce") + extra
        return Output(
            self.settings.dlq_topic, None, value, headers, out.item_id, out.origin, out.original
        )

    async def _commit(self, records: Sequence[Any]) -> bool:
        """Commit the next offset of every partition the batch covered."""
        assert self._consumer is not None
        try:
            await self._consumer.commit(next_offsets(records))
            return True
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The partitions moved on: the new owner re-reads these (duplicates, never a loss).
            self.metrics.commit_failures.inc()
            log.warning("commit failed, batch will be redelivered: %s", exc)
            return False

    def _record_metrics(
        self,
        records: Sequence[Any],
        classified: Sequence[tuple[FeedItem, Prediction]],
        rejections: Sequence[tuple[Rejection, str]],
        acked_at: float,
    ) -> None:
        m = self.metrics
        m.labeled.inc(len(classified))
        for item, pred in classified:
            if pred.truncated:
                m.truncated.inc()
            if item.origin.timestamp_ms:
                m.end_to_end_seconds.observe(max(0.0, acked_at - item.origin.timestamp_ms / 1000))
        for rej, _ in rejections:
            m.dead_lettered.labels(rej.reason).inc()
        assert self._consumer is not None
        last: dict[TopicPartition, int] = {}
        for rec in records:
            last[TopicPartition(rec.topic, rec.partition)] = rec.offset
        for tp, offset in last.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                m.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - offset - 1))


def next_offsets(records: Sequence[Any]) -> dict[TopicPartition, int]:
    """The offset to commit for every partition `records` cover: one past the last."""
    offsets: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
    return offsets
