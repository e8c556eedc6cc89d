"""What the model watch writes to the broker: drift events, fine-tuning jobs and dead
letters, queued on one producer and acknowledged (`flush`) before any commit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from online.feedback import UNMATCHED_FEEDBACK
from online.feedback_records import Feedback, gold_document
from streams.kafka.records import DLQ_HEADER_PREFIX, dead_letter_headers, dead_letter_record
from streams.messages import Origin, Rejection
from streams.metrics import WatchMetrics
from streams.settings import Settings


class WatchOutbox:
    """The watch's sends; `producer` is set once it is started."""

    def __init__(self, settings: Settings, metrics: WatchMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue a record; `flush` waits for it."""
        assert self.producer is not None
        # send() only queues; the futures are awaited in flush before any commit.
        self._pending.append(
            asyncio.ensure_future(self.producer.send(topic, value, key=key, headers=headers))
        )

    async def flush(self) -> None:
        """Wait until everything sent is acknowledged (raises if the broker refused)."""
        pending, self._pending = self._pending, []
        for queued in pending:
            delivery = await queued
            await delivery

    def drift(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish drift events, counted by detector."""
        for event in events:
            self.metrics.drift_events.labels(event["detector"]).inc()
            self.send(
                self.settings.drift_topic,
                self.settings.model_name.encode(),
                json.dumps(event, separators=(",", ":")).encode(),
            )

    def dead_letter(self, rec: Any, reason: str, error: str) -> None:
        """Dead-letter a consumed record with its original bytes."""
        origin = Origin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
        rejection = Rejection(origin.derived_id, reason, error, origin)
        key, value, headers = dead_letter_record(
            rejection, rec.key, rec.value, "watch", self.settings.max_message_bytes
        )
        self.send(self.settings.dlq_topic, key, value, headers)

    def dead_letter_feedback(self, fb: Feedback, error: str) -> None:
        """Unmatched feedback without text: its fields as the value, the reason in headers."""
        self.metrics.feedback.labels("dead_lettered").inc()
        topic, partition, offset = fb.origin or (self.settings.feedback_topic, -1, -1)
        origin = Origin(topic, partition, offset)
        rejection = Rejection(fb.id, UNMATCHED_FEEDBACK, error, origin)
        value = json.dumps({"id": fb.id, "task": fb.task, **gold_document(fb.label)}).encode()
        headers = [
            *dead_letter_headers(rejection, "watch"),
            (DLQ_HEADER_PREFIX + "rebuilt", b"true"),
        ]
        self.send(self.settings.dlq_topic, fb.id.encode(), value, headers)
