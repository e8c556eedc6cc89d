"""Delivery: produce a batch's outputs, await every acknowledgement, then commit the offsets
they cover - or, with exactly-once, outputs and offsets in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
)

from serving.backends.contract import Prediction
from streams.classify.batching import next_offsets
from streams.classify.outputs import Output, PreparedBatch, oversized_stand_in
from streams.classify.retry import backoff_s
from streams.messages import OUTPUT_TOO_LARGE, FeedItem, Rejection
from streams.metrics import WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

PRODUCE_ATTEMPTS = 5


class ProduceFailedError(RuntimeError):
    """Outputs could not be acknowledged; the batch stays uncommitted and will be redelivered."""


class Delivery:
    """Delivers prepared batches through one producer, committing through one consumer."""

    def __init__(
        self,
        settings: Settings,
        metrics: WorkerMetrics,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        transactional_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.consumer = consumer
        self.transactional_id = transactional_id

    async def deliver(self, batch: PreparedBatch) -> None:
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
        pending = list(batch.outputs)
        for attempt in range(1, PRODUCE_ATTEMPTS + 1):
            error = await self._try_transaction(batch, pending)
            if error is None:
                self._record_metrics(batch.records, batch.classified, batch.rejections, time.time())
                return
            with contextlib.suppress(KafkaError):
                await self.producer.abort_transaction()
            self.metrics.retries.labels("produce").inc()
            log.warning("transaction aborted (%r); attempt %d", error, attempt)
            await asyncio.sleep(backoff_s(attempt, 0.2))
        raise ProduceFailedError(
            f"transaction of {len(pending)} outputs aborted after {PRODUCE_ATTEMPTS} attempts"
        )

    async def _try_transaction(
        self, batch: PreparedBatch, pending: list[Output]
    ) -> BaseException | None:
        """One transaction of every pending output and the offsets; the error if it failed."""
        producer = self.producer
        await producer.begin_transaction()
        try:
            futures = [await self._send(i, pending) for i in range(len(pending))]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if not failed:
                offsets = next_offsets(batch.records)
                await producer.send_offsets_to_transaction(offsets, self.settings.group_id)
                await producer.commit_transaction()
                return None
            for i, result in enumerate(results):
                if isinstance(result, MessageSizeTooLargeError):
                    pending[i] = self._oversized(pending[i], result)
            return failed[0]
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
            error: BaseException = exc
            return error

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
            await asyncio.sleep(backoff_s(attempt, 0.2))
        raise ProduceFailedError(
            f"{len(pending)} outputs unacknowledged after {PRODUCE_ATTEMPTS} attempts"
        )

    async def _send(self, index: int, pending: list[Output]) -> asyncio.Future[Any]:
        """Queue one output; one the client refuses as too large becomes a dead letter."""
        out = pending[index]
        try:
            future: asyncio.Future[Any] = await self.producer.send(
                out.topic, value=out.value, key=out.key, headers=out.headers
            )
        except MessageSizeTooLargeError as exc:
            out = pending[index] = self._oversized(out, exc)
            future = await self.producer.send(
                out.topic, value=out.value, key=out.key, headers=out.headers
            )
        return future

    def _oversized(self, out: Output, error: BaseException) -> Output:
        self.metrics.dead_lettered.labels(OUTPUT_TOO_LARGE).inc()
        log.warning("output for %s too large (%s): dead-lettering it", out.item_id[:200], error)
        return oversized_stand_in(self.settings, out, error)

    async def _commit(self, records: Sequence[Any]) -> bool:
        """Commit the next offset of every partition the batch covered."""
        try:
            await self.consumer.commit(next_offsets(records))
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
        last: dict[TopicPartition, int] = {}
        for rec in records:
            last[TopicPartition(rec.topic, rec.partition)] = rec.offset
        assigned = self.consumer.assignment()
        for tp, offset in last.items():
            if tp not in assigned:
                continue  # revoked while the batch was delivered (aiokafka asserts on it)
            high = self.consumer.highwater(tp)
            if high is not None:
                m.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - offset - 1))
