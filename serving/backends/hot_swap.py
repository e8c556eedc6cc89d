"""A classifier that follows the served version: promotions and rollbacks reach running
workers without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from serving.backends.contract import Classifier, ModelInfo, Prediction
from serving.backends.warmup import warm_up

log = logging.getLogger(__name__)


class FollowingClassifier:
    """Wraps the backend of the served version and swaps it when that version changes.

    `served()` answers which version should be served (a cheap directory listing); it is
    asked at most every `check_s` seconds, between batches. The new backend is opened off
    the event loop and warmed on `warmup_batches` batches of `warmup_batch` texts before it
    replaces the old one, so no live batch waits on a half-loaded or cold model.
    """

    def __init__(
        self,
        open_version: Callable[[int], Classifier],
        served: Callable[[], int | None],
        *,
        check_s: float = 2.0,
        warmup_batch: int = 0,
        warmup_batches: int = 0,
    ) -> None:
        version = served()
        if version is None:
            raise FileNotFoundError("no served model version to follow")
        self._open = open_version
        self._served = served
        self._check_s = check_s
        self._version = version
        self._current = open_version(version)
        self._next_check = time.monotonic() + check_s
        self._warmup = (warmup_batch, warmup_batches)
        self.swaps = 0

    @property
    def info(self) -> ModelInfo:
        """The model the current backend serves."""
        return self._current.info

    async def _follow(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._check_s
        wanted = await asyncio.to_thread(self._served)
        if wanted is None or wanted == self._version:
            return
        try:
            fresh = await asyncio.to_thread(self._open, wanted)
        except Exception as exc:  # a broken version must not stop the one that works
            log.error(
                "cannot switch to version %s, still serving %s: %r", wanted, self._version, exc
            )
            return
        try:
            await warm_up(fresh, *self._warmup)
        except Exception as exc:
            log.error(
                "version %s failed its warm-up, still serving %s: %r", wanted, self._version, exc
            )
            await fresh.close()
            return
        old, self._current = self._current, fresh
        log.info("now serving version %s (was %s)", wanted, self._version)
        self._version = wanted
        self.swaps += 1
        await old.close()

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify with the served version, switching first if it changed."""
        await self._follow()
        return await self._current.classify(texts)

    async def close(self) -> None:
        """Close the current backend."""
        await self._current.close()
