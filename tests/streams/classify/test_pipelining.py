"""The worker's loop without a broker: batch N+1 is queued for inference before batch N's
outputs are built, every record is delivered once and in order, a batch started before a
rebalance is dropped uncommitted, and outputs carry the model that answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from serving.backends.contract import ModelInfo, Prediction, TaskPrediction
from serving.tasks import DEFAULT_TASKS
from streams.classify.inference import BatchAbandonedError
from streams.classify.outputs import PreparedBatch
from streams.classify.worker import ClassifyWorker
from streams.metrics import WorkerMetrics
from streams.settings import Settings

V1 = ModelInfo("feedpulse_classifier", "1", "fake", DEFAULT_TASKS, 128)
TOPIC = "feeds.raw"


class SlowClassifier:
    """Answers after `delay_s`, one call at a time like the in-process backend, recording
    how many calls were outstanding at once."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.info = V1
        self.delay_s = delay_s
        self.outstanding = 0
        self.most_outstanding = 0
        self._one_at_a_time = asyncio.Lock()

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        try:
            async with self._one_at_a_time:
                answered_by = self.info
                await asyncio.sleep(self.delay_s)
        finally:
            self.outstanding -= 1
        tasks = {
            t.name: TaskPrediction(t.labels[0], 1.0, {t.labels[0]: 1.0}) for t in DEFAULT_TASKS
        }
        return [Prediction(tasks, truncated=False, model=answered_by) for _ in texts]

    async def close(self) -> None:
        pass


def record(offset: int) -> Any:
    value = f'{{"id": "i{offset}", "text": "headline {offset}"}}'.encode()
    return SimpleNamespace(
        topic=TOPIC, partition=0, offset=offset, key=None, value=value, timestamp=1
    )


class FeedPartitions:
    """What the loop's `collect` reads: the records, `max_records` at a time."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.consumer = SimpleNamespace(assignment=lambda: {TopicPartition(TOPIC, 0)})

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        await asyncio.sleep(0)
        taken, self.records = self.records[:max_records], self.records[max_records:]
        return {TopicPartition(TOPIC, 0): taken} if taken else {}


class RecordingDelivery:
    def __init__(self, expected: int) -> None:
        self.batches: list[PreparedBatch] = []
        self.expected = expected
        self.all_delivered = asyncio.Event()

    async def deliver(self, batch: PreparedBatch) -> None:
        self.batches.append(batch)
        if sum(len(b.records) for b in self.batches) >= self.expected:
            self.all_delivered.set()


def worker_for(classifier: SlowClassifier, **settings: Any) -> ClassifyWorker:
    s = Settings(metrics_port=0, max_wait_ms=0, **settings)
    return ClassifyWorker(s, classifier, WorkerMetrics(CollectorRegistry()))


async def run_loop(worker: ClassifyWorker, records: list[Any]) -> RecordingDelivery:
    delivery = RecordingDelivery(len(records))
    loop = asyncio.create_task(worker._loop(FeedPartitions(records), delivery))  # type: ignore[arg-type]
    await asyncio.wait_for(delivery.all_delivered.wait(), 5)
    worker.stop()
    await asyncio.wait_for(loop, 5)
    return delivery


async def test_the_next_batch_is_queued_while_one_is_classified() -> None:
    classifier = SlowClassifier()
    delivery = await run_loop(worker_for(classifier, max_batch=8), [record(n) for n in range(64)])
    assert classifier.most_outstanding == 2, "batch N+1 should wait in line behind batch N"
    offsets = [r.offset for b in delivery.batches for r in b.records]
    assert offsets == list(range(64)), "every record delivered once, in order"
    assert all(len(b.outputs) == len(b.records) for b in delivery.batches)


async def test_a_lone_batch_is_delivered_without_waiting_for_another() -> None:
    delivery = await run_loop(worker_for(SlowClassifier(), max_batch=64), [record(0)])
    assert [[r.offset for r in b.records] for b in delivery.batches] == [[0]]


@pytest.mark.parametrize("classified_first", [False, True])
async def test_a_batch_started_before_a_rebalance_is_dropped_uncommitted(
    classified_first: bool,
) -> None:
    worker = worker_for(SlowClassifier())
    ahead = worker.start([record(0), record(1)])
    if classified_first:
        await asyncio.wait({ahead.classifying})
    worker.rebalanced()  # the revoke listener, under the batch lock
    with pytest.raises(BatchAbandonedError) as raised:
        await worker.finish(ahead)
    assert not raised.value.stopping
    assert ahead.classifying.done()


async def test_outputs_carry_the_model_that_answered_not_the_one_serving_now() -> None:
    classifier = SlowClassifier()
    worker = worker_for(classifier)
    ahead = worker.start([record(0)])
    await asyncio.sleep(0.005)  # classification under way on version 1
    classifier.info = replace(V1, version="2")  # a promotion swaps the backend meanwhile
    prepared = await worker.finish(ahead)
    assert b'"version":"1"' in (prepared.outputs[0].value or b"")
