"""Read topics without joining a group: for `feedpulse tail`, the demo and audits."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import isolation_level, kafka_client_options
from streams.kafka.records import decode_headers
from streams.settings import Settings


async def read_topics(
    settings: Settings,
    topics: Sequence[str],
    *,
    from_beginning: bool = True,
    idle_timeout_s: float | None = None,
    yield_idle: bool = False,
) -> AsyncIterator[Any]:
    """Yield records from every partition of `topics`; stop after `idle_timeout_s` of silence.

    With `yield_idle`, an empty poll yields None so callers can check their own deadlines.
    """
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        # With exactly-once, outputs of aborted transactions must stay unseen.
        isolation_level=isolation_level(settings),
    )
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata: the topics may be brand new
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise ValueError(f"no such topics: {list(topics)}")
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        last_seen = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch and yield_idle:
                yield None
            for recs in batch.values():
                for rec in recs:
                    yield rec
                last_seen = time.monotonic()
            if idle_timeout_s is not None and time.monotonic() - last_seen > idle_timeout_s:
                return
    finally:
        await consumer.stop()


def render_record(rec: Any) -> str:
    """One JSON line for a record: JSON values inline, other bytes as text or base64."""
    value: Any
    raw = rec.value
    if raw is None:
        value = None
    else:
        try:
            text = raw.decode("utf-8")
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        except UnicodeDecodeError:
            value = {"base64": base64.b64encode(raw).decode()}
    doc: dict[str, Any] = {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
        "value": value,
    }
    headers = decode_headers(rec.headers)
    if headers:
        doc["headers"] = headers
    return json.dumps(doc, ensure_ascii=False)
