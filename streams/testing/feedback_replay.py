"""Replay labeled rows as a feed with late feedback: each item goes to the input topic and
its true label to the feedback topic `lag` items later. The online-learning scenario (the
benchmark and its shortened test) streams one domain, then switches to another."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from streams.kafka.clients import kafka_client_options
from streams.settings import Settings


@dataclass(frozen=True)
class Phase:
    """A stretch of the stream: `rows` of (text, label), ids `<name>-<n>`."""

    name: str
    rows: Sequence[tuple[str, str]]


async def replay_with_feedback(
    settings: Settings,
    phases: Sequence[Phase],
    *,
    task: str = "sentiment",
    lag: int = 20,
    rate: float = 0.0,
    on_sent: Callable[[int], None] | None = None,
) -> dict[str, tuple[int, int]]:
    """Publish every phase in order, feedback `lag` items behind; `rate` > 0 paces items/s.

    Returns each phase's [first, end) position in the stream. Waits for every
    acknowledgement.
    """
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all", linger_ms=10)
    await producer.start()
    spans: dict[str, tuple[int, int]] = {}
    stream = [
        (f"{p.name}-{i}", text, label) for p in phases for i, (text, label) in enumerate(p.rows)
    ]
    position = 0
    for p in phases:
        spans[p.name] = (position, position + len(p.rows))
        position += len(p.rows)
    futures = []
    started = time.monotonic()

    async def feedback(index: int) -> None:
        item_id, _, label = stream[index]
        doc = {"id": item_id, "task": task, "label": label}
        futures.append(
            await producer.send(
                settings.feedback_topic, json.dumps(doc).encode(), key=item_id.encode()
            )
        )

    try:
        for n, (item_id, text, _) in enumerate(stream):
            doc = {"id": item_id, "text": text}
            futures.append(
                await producer.send(
                    settings.input_topic,
                    json.dumps(doc, ensure_ascii=False).encode(),
                    key=item_id.encode(),
                )
            )
            if n >= lag:
                await feedback(n - lag)
            if on_sent:
                on_sent(n + 1)
            if rate > 0:
                ahead = started + (n + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        for index in range(max(0, len(stream) - lag), len(stream)):
            await feedback(index)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return spans
