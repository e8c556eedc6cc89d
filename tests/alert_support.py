"""Helpers shared by the alert-worker tests: settings, a replay stream, publishing, metrics,
and `HandlerRig`: the app's handlers over a dict table and list topics, without faust."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.types import Message
from prometheus_client import CollectorRegistry

from streams.alerts.app import _AlertHandlers, _Topics, spike_settings
from streams.alerts.spike_detector import SpikeDetector
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.clients import kafka_client_options
from streams.kafka.records import decode_headers
from streams.metrics import AlertMetrics, KeyLabels
from streams.settings import Settings
from streams.testing.replay import Burst, read_tweets, replay
from tests.conftest import SHARED_DATA

KEYS = [f"ticker:T{i}" for i in range(6)]
WINDOW_S = 10.0
PER_WINDOW = 25
START_TS = 1_700_000_000.0


def alert_settings(
    settings_factory: Callable[..., Settings], broker: EmbeddedBroker, **overrides: Any
) -> Settings:
    return settings_factory(
        broker,
        alerts_topic=f"alerts-{time.monotonic_ns()}",
        alert_app_id=f"alerts-{time.monotonic_ns()}",
        alert_window_s=WINDOW_S,
        alert_min_volume=15,
        alert_warmup_windows=5,
        alert_cooldown_windows=5,
        alert_grace_s=3.0,
        alert_tick_s=0.5,
        alert_metrics_port=free_port(),
        topic_partitions=2,
        **{"alert_key_fields": ["ticker"], **overrides},
    )


def unit_settings(**overrides: Any) -> Settings:
    """The settings `alert_settings` gives, for handlers run in process (no broker)."""
    values: dict[str, Any] = {
        "output_topic": "labeled",
        "alerts_topic": "alerts",
        "dlq_topic": "dlq",
        "alert_window_s": WINDOW_S,
        "alert_min_volume": 15,
        "alert_warmup_windows": 5,
        "alert_cooldown_windows": 5,
        "alert_grace_s": 3.0,
        "topic_partitions": 2,
        "alert_key_fields": ["ticker"],
    }
    return Settings(**{**values, **overrides})


def stream(bursts: Sequence[Burst], windows: int) -> list[dict[str, Any]]:
    """TweetEval test tweets over KEYS, PER_WINDOW per key and window, bursts injected."""
    tweets = read_tweets(SHARED_DATA / "tweeteval_sentiment" / "test.jsonl")
    return list(
        replay(
            tweets, KEYS, windows=windows, per_window=PER_WINDOW, window_s=WINDOW_S, bursts=bursts
        )
    )


async def publish(settings: Settings, docs: Sequence[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all")
    await producer.start()
    try:
        for doc in docs:
            # Keyed by entity, as publishers do: one key's items stay in order on one partition.
            name, value = next(iter(doc["meta"].items()))
            await producer.send(
                settings.output_topic, json.dumps(doc).encode(), key=f"{name}:{value}".encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


def metric(settings: Settings, name: str) -> float:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{settings.alert_metrics_port}/metrics", timeout=5
    ) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def wait_processed(settings: Settings, count: int, within_s: float = 90) -> None:
    """Wait until the detecting agent has counted `count` key updates (one per test item)."""
    deadline = time.monotonic() + within_s
    seen = 0.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen = metric(settings, "feedpulse_alert_key_updates_total")
            if seen >= count:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"alert worker counted {seen:.0f} of {count} items in {within_s} s")


async def wait_settled(
    settings: Settings, count: int, quiet_s: float = 5, within_s: float = 90
) -> int:
    """Key updates counted once `count` is reached or the count stops moving for `quiet_s`.

    After a restart faust may skip or repeat records (../shared/INFRA.md), so a restarted
    worker's count is measured, not required to match.
    """
    deadline = time.monotonic() + within_s
    seen, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            now = metric(settings, "feedpulse_alert_key_updates_total")
            if now >= count:
                return int(now)
            if now != seen:
                seen, since = now, time.monotonic()
            elif now > 0 and time.monotonic() - since >= quiet_s:
                return int(now)
        await asyncio.sleep(0.5)
    raise AssertionError(f"alert worker counted {seen:.0f} of {count} items in {within_s} s")


@dataclass
class Sent:
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: dict[str, str]


@dataclass
class ListTopic:
    """A topic that keeps what is sent to it (the part of faust's `send` the handlers use)."""

    name: str
    sent: list[Sent] = field(default_factory=list)

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        partition: int | None = None,
        headers: Any = None,
    ) -> None:
        assert key is None or isinstance(key, bytes)
        assert value is None or isinstance(value, bytes)
        # aiokafka's own check: "Need at least one: key or value".
        assert key is not None or value is not None, "a record needs a key or a value"
        self.sent.append(Sent(key, value, partition, decode_headers(headers)))


def kafka_message(
    topic: str, value: bytes | None, key: bytes | None, partition: int, offset: int
) -> Message:
    """A consumed record as faust hands it to an agent (`event.message`)."""
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=time.time(),
        timestamp_type=0,
        headers=[],
        key=key,
        value=value,
        checksum=None,
    )


class HandlerRig:
    """The alert app's handlers wired to a dict (the table) and list topics (the rest).

    Keyed sends go to `detect` on the partition faust would pick (crc32 of the key, as
    Kafka's default partitioner is sticky to a key), so the whole path runs in process.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.state: dict[str, Any] = {}
        self.keyed = ListTopic("keyed")
        self.alerts = ListTopic(settings.alerts_topic)
        self.dlq = ListTopic(settings.dlq_topic)
        self.metrics = AlertMetrics(CollectorRegistry(), KeyLabels(settings.alert_metric_keys))
        detector = SpikeDetector(spike_settings(settings), grace_s=settings.alert_grace_s)
        topics = _Topics(self.keyed, self.alerts, self.dlq, "spike-state-changelog")  # type: ignore[arg-type]
        self.handlers = _AlertHandlers(settings, detector, self.metrics, topics, self.state, clock)
        self.offsets: dict[str, int] = {}

    def message(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int
    ) -> Message:
        offset = self.offsets.get(f"{topic}/{partition}", 0)
        self.offsets[f"{topic}/{partition}"] = offset + 1
        return kafka_message(topic, value, key, partition, offset)

    async def labeled(self, value: bytes | None, key: bytes | None = None) -> None:
        """One record on `feeds.labeled`, followed through to `detect`."""
        await self.handlers.fan_out(self.message(self.settings.output_topic, value, key, 0))
        await self.drain()

    async def keyed_event(self, value: bytes | None, partition: int = 0) -> None:
        """One record written straight to the keyed topic (by someone other than fan_out)."""
        await self.handlers.detect(self.message("keyed", value, None, partition))

    async def tick(self) -> None:
        await self.handlers.tick()
        await self.drain()

    async def drain(self) -> None:
        pending, self.keyed.sent = self.keyed.sent, []
        for sent in pending:
            partition = sent.partition
            if partition is None:
                assert sent.key is not None
                partition = zlib.crc32(sent.key) % self.settings.topic_partitions
            await self.handlers.detect(self.message("keyed", sent.value, sent.key, partition))

    def alert_docs(self) -> list[dict[str, Any]]:
        return [json.loads(s.value or b"") for s in self.alerts.sent]

    def count(self, metric: Any) -> float:
        """The value of an unlabeled prometheus counter or gauge."""
        return float(metric._value.get())
