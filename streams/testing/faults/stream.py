"""The campaign's steady stream: tweets spread over alert keys, an invalid message every
`bad_every`, true labels on the feedback topic `lag` items later, and negative bursts on
one key when the schedule asks for them."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from streams import messages as m
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings

Position = tuple[int, int]

BAD_INPUTS: list[tuple[Callable[[str], bytes], str]] = [
    (lambda i: f'{{"id": "{i}", "text": "cut'.encode(), m.INVALID_JSON),
    (lambda i: json.dumps({"id": i, "text": 12}).encode(), m.TEXT_NOT_STRING),
    (lambda i: json.dumps({"id": i, "text": "   "}).encode(), m.EMPTY_TEXT),
    (lambda i: json.dumps({"id": i, "title": "no text"}).encode(), m.MISSING_TEXT),
    (lambda i: b"\xff\xfe " + i.encode(), m.UNDECODABLE_BYTES),
    (lambda i: b"[1, 2]", m.NOT_AN_OBJECT),
]


@dataclass(frozen=True)
class BurstWindow:
    """Key `key` got mostly negative items from `start` to `end` (wall clock)."""

    key: str
    start: float
    end: float


@dataclass
class StreamLog:
    """What was published: per input, None (must be labeled) or its dead-letter reason."""

    outcomes: list[str | None] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    feedback_ids: list[str] = field(default_factory=list)
    bursts: list[BurstWindow] = field(default_factory=list)


class CampaignStream:
    """Publishes the stream at `rate` items/s until stopped; bursts on request."""

    def __init__(
        self,
        settings: Settings,
        tweets: Sequence[tuple[str, str]],
        negatives: Sequence[str],
        *,
        keys: Sequence[str],
        rate: float,
        bad_every: int = 40,
        feedback_every: int = 2,
        lag: int = 30,
        burst_share: float = 0.9,
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.tweets = tweets
        self.negatives = negatives
        self.keys = list(keys)
        self.rate = rate
        self.bad_every = bad_every
        self.feedback_every = feedback_every
        self.lag = lag
        self.burst_share = burst_share
        self.rng = random.Random(seed)
        self.log = StreamLog()
        self._burst: tuple[str, float] | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Stop publishing (the run then waits for every acknowledgement)."""
        self._stop.set()

    async def burst(self, key: str, seconds: float) -> BurstWindow:
        """Make `key` mostly negative for `seconds`; returns the burst once it is over."""
        start = time.time()
        self._burst = (key, start + seconds)
        await asyncio.sleep(seconds)
        self._burst = None
        window = BurstWindow(key, start, time.time())
        self.log.bursts.append(window)
        return window

    def _item(self, n: int) -> tuple[bytes, str | None, str | None]:
        """(value, dead-letter reason or None, feedback label or None) of item `n`."""
        item_id = f"c-{n}"
        if n % self.bad_every == self.bad_every - 1:
            make, reason = BAD_INPUTS[(n // self.bad_every) % len(BAD_INPUTS)]
            return make(item_id), reason, None
        key = self.keys[n % len(self.keys)]
        burst = self._burst
        if burst is not None and burst[0] == key and self.rng.random() < self.burst_share:
            text, label = self.negatives[n % len(self.negatives)], None
        else:
            text, label = self.tweets[n % len(self.tweets)]
        name, _, value = key.partition(":")
        doc = {"id": item_id, "text": text, "meta": {name: value}}
        feedback = label if n % self.feedback_every == 0 else None
        return json.dumps(doc, ensure_ascii=False).encode(), None, feedback

    async def run(self) -> StreamLog:
        """Publish until `stop()`; every record acknowledged before it returns."""
        s = self.settings
        producer = AIOKafkaProducer(**kafka_client_options(s), acks="all", linger_ms=10)
        await producer.start()
        inputs: list[asyncio.Future[object]] = []
        others: list[asyncio.Future[object]] = []
        # Feedback names the true label `lag` items later: (due after item n, id, record).
        waiting: list[tuple[int, str, bytes]] = []

        async def send_feedback(item_id: str, value: bytes) -> None:
            others.append(await producer.send(s.feedback_topic, value, key=item_id.encode()))
            self.log.feedback_ids.append(item_id)

        started = time.monotonic()
        try:
            n = 0
            while not self._stop.is_set():
                value, reason, label = self._item(n)
                item_id = f"c-{n}"
                inputs.append(await producer.send(s.input_topic, value, key=item_id.encode()))
                self.log.outcomes.append(reason)
                if label is not None:
                    doc = {"id": item_id, "task": "sentiment", "label": label}
                    waiting.append((n + self.lag, item_id, json.dumps(doc).encode()))
                while waiting and waiting[0][0] <= n:
                    _, fb_id, fb = waiting.pop(0)
                    await send_feedback(fb_id, fb)
                n += 1
                ahead = started + n / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            for _, fb_id, fb in waiting:
                await send_feedback(fb_id, fb)
            for fut in inputs:
                meta = await fut
                self.log.positions.append((meta.partition, meta.offset))  # type: ignore[attr-defined]
            for fut in others:
                await fut
        finally:
            await producer.stop()
        return self.log
