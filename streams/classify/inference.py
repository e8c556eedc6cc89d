"""The inference step: classify a batch, retrying while the backend is away, and falling
back to one text at a time when the batch itself is the problem."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from serving.backends.contract import Classifier, InferenceError, Prediction
from streams.classify.batching import FetchGate
from streams.classify.retry import backoff_s
from streams.messages import CLASSIFY_FAILED, FeedItem, Rejection
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Classified = list[tuple[FeedItem, Prediction]]


class BatchAbandonedError(Exception):
    """The worker stops before this batch could be classified; it stays uncommitted."""


class InferenceStep:
    """Classifies batches for one worker; `stopping()` tells it to give up waiting."""

    def __init__(
        self,
        classifier: Classifier,
        metrics: WorkerMetrics,
        stopping: Callable[[], bool],
        fetching: FetchGate,
    ) -> None:
        self.classifier = classifier
        self.metrics = metrics
        self._stopping = stopping
        self._fetching = fetching

    async def classify(self, items: Sequence[FeedItem]) -> tuple[Classified, list[Rejection]]:
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
                    attempt += 1
                    await self._wait_for_backend(exc, attempt)
                except Exception as exc:  # a backend bug on odd input must not stop the stream
                    log.warning("batch of %d failed (%r): one by one", len(items), exc)
                    break
        finally:
            self._fetching.resume()
        return await self._one_by_one(items)

    async def _wait_for_backend(self, exc: InferenceError, attempt: int) -> None:
        """Back off before the next attempt; give up if the worker is stopping."""
        if self._stopping():
            raise BatchAbandonedError("stopping while inference is unavailable") from exc
        if attempt == 1:
            # Stop fetching while the server is away: memory stays bounded and
            # nothing is dead-lettered for the server's absence.
            self._fetching.pause()
        self.metrics.retries.labels("classify").inc()
        delay = backoff_s(attempt, 0.1)
        log.warning("inference unavailable (%s); retry %d in %.1fs", exc, attempt, delay)
        await asyncio.sleep(delay)

    async def _one_by_one(self, items: Sequence[FeedItem]) -> tuple[Classified, list[Rejection]]:
        done: Classified = []
        failed: list[Rejection] = []
        for item in items:
            try:
                (pred,) = await self.classifier.classify([item.text])
                done.append((item, pred))
            except Exception as exc:  # one poisoned item must not stop the stream
                failed.append(Rejection(item.id, CLASSIFY_FAILED, str(exc), item.origin))
        return done, failed
