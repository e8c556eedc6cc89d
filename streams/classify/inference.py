"""The inference step: classify a batch, retrying while the backend is away, and falling
back to one text at a time when the batch itself is the problem.

A backend's absence never dead-letters anything: retriable errors are retried (fetching
paused meanwhile), in the batch and in the one-by-one fallback alike. Waiting gives way
to a stop or to a rebalance: the batch is then abandoned uncommitted, for its partitions'
next owner to read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from serving.backends.contract import Classifier, InferenceError, Prediction
from streams.classify.batching import FetchGate
from streams.classify.retry import backoff_s
from streams.messages import CLASSIFY_FAILED, FeedItem, Rejection
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Classified = list[tuple[FeedItem, Prediction]]
T = TypeVar("T")


class BatchAbandonedError(Exception):
    """The batch cannot be classified before the worker stops or its partitions move; it
    stays uncommitted. `stopping` says which."""

    def __init__(self, message: str, *, stopping: bool) -> None:
        super().__init__(message)
        self.stopping = stopping


class InferenceStep:
    """Classifies batches for one worker; `stopping()` tells it to give up waiting, and
    `abandon()` (a rebalance) gives up the batch in hand."""

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
        self._abandon = asyncio.Event()
        self._attempt = 0
        self._last_done = 0.0

    def abandon(self) -> None:
        """Give up the batch being classified (its partitions are being revoked)."""
        self._abandon.set()

    def resume(self) -> None:
        """Classify again after a rebalance settled."""
        self._abandon.clear()

    async def classify(self, items: Sequence[FeedItem]) -> tuple[Classified, list[Rejection]]:
        """Classify the batch; retriable errors are retried, others fall back item by item."""
        if not items:
            return [], []
        texts = [it.text for it in items]
        started = time.perf_counter()
        try:
            try:
                preds = await self._with_retries(lambda: self.classifier.classify(texts))
            except BatchAbandonedError:
                raise
            except Exception as exc:  # a backend bug on odd input must not stop the stream
                log.warning("batch of %d failed (%r): one by one", len(items), exc)
                return await self._one_by_one(items)
            done = time.perf_counter()
            # A batch queued behind the one before it is timed from that one's end.
            self.metrics.inference_seconds.observe(done - max(started, self._last_done))
            self._last_done = done
            self.metrics.batch_size.observe(len(items))
            return list(zip(items, preds, strict=True)), []
        finally:
            self._attempt = 0
            self._fetching.resume()

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it succeeds or fails for a reason retrying cannot fix."""
        while True:
            try:
                return await self._unless_abandoned(call)
            except InferenceError as exc:
                if not exc.retriable:
                    raise
                self._attempt += 1
                await self._wait_for_backend(exc, self._attempt)

    async def _unless_abandoned(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await `call()`, cancelling it if the batch is abandoned meanwhile."""
        self._check_abandoned(None)
        work = asyncio.ensure_future(call())
        gave_up = asyncio.ensure_future(self._abandon.wait())
        try:
            await asyncio.wait({work, gave_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gave_up.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            self._check_abandoned(None)
            # Given up, though the rebalance has settled meanwhile: still abandoned.
            raise BatchAbandonedError("partitions revoked during inference", stopping=False)
        return work.result()

    def _check_abandoned(self, cause: BaseException | None) -> None:
        if self._stopping():
            raise BatchAbandonedError(
                "stopping while inference is unavailable", stopping=True
            ) from cause
        if self._abandon.is_set():
            raise BatchAbandonedError("partitions revoked during inference", stopping=False)

    async def _wait_for_backend(self, exc: InferenceError, attempt: int) -> None:
        """Back off before the next attempt; give up if stopping or revoked."""
        self._check_abandoned(exc)
        if attempt == 1:
            # Stop fetching while the server is away: memory stays bounded and
            # nothing is dead-lettered for the server's absence.
            self._fetching.pause()
        self.metrics.retries.labels("classify").inc()
        delay = backoff_s(attempt, 0.1)
        log.warning("inference unavailable (%s); retry %d in %.1fs", exc, attempt, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abandon.wait(), delay)
        self._check_abandoned(exc)

    async def _one_by_one(self, items: Sequence[FeedItem]) -> tuple[Classified, list[Rejection]]:
        done: Classified = []
        failed: list[Rejection] = []
        for item in items:
            try:
                (pred,) = await self._with_retries(partial(self.classifier.classify, [item.text]))
                done.append((item, pred))
            except BatchAbandonedError:
                raise
            except Exception as exc:  # one poisoned item must not stop the stream
                failed.append(Rejection(item.id, CLASSIFY_FAILED, str(exc), item.origin))
        return done, failed
