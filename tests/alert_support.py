"""Helpers shared by the alert-worker tests: settings, a replay stream, publishing, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.clients import kafka_client_options
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
