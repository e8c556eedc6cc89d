"""The faust alert worker against a real broker: one alert per burst, none without, and the
window state survives a restart through the table's changelog."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.testing.replay import Burst
from tests.alert_support import (
    KEYS,
    PER_WINDOW,
    START_TS,
    WINDOW_S,
    alert_settings,
    publish,
    stream,
    wait_processed,
    wait_settled,
)

pytestmark = pytest.mark.integration


async def alerts(settings: Settings) -> list[dict[str, Any]]:
    found = []
    async for record in read_topics(settings, [settings.alerts_topic], idle_timeout_s=3):
        found.append(json.loads(record.value))
    return found


async def run_stream(
    settings: Settings,
    process_factory: Callable[..., Any],
    docs: list[dict[str, Any]],
    restart_at: int | None = None,
) -> list[dict[str, Any]]:
    await ensure_topics(settings, [settings.output_topic, settings.alerts_topic])
    worker = process_factory(settings, "alerts", log_name="alerts")
    split = restart_at if restart_at is not None else len(docs)
    await publish(settings, docs[:split])
    await wait_processed(settings, split)
    if restart_at is not None:
        await asyncio.sleep(2)  # let the table's changelog writes land
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        worker = process_factory(settings, "alerts", log_name="alerts")
        await publish(settings, docs[split:])
        # The new worker counts only what it reads itself; faust may skip or repeat a few.
        counted = await wait_settled(settings, len(docs) - split)
        print(f"after the restart: {counted} items counted for {len(docs) - split} published")
        assert counted >= 0.9 * (len(docs) - split)
    await asyncio.sleep(3 * 0.5 + 2)  # ticks close the last windows
    found = await alerts(settings)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    return found


async def test_one_alert_for_a_burst_and_none_without(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    burst = Burst("ticker:T3", start=14, windows=2, share=0.8)
    with_burst = await run_stream(
        alert_settings(settings_factory, broker), process_factory, stream([burst], 24)
    )
    assert len(with_burst) == 1, with_burst
    alert = with_burst[0]
    assert alert["key"] == "ticker:T3" and alert["sentiment"] == "negative"
    first_burst_window = START_TS + burst.start * WINDOW_S
    # Detected in the first window that holds the burst's start (windows hop by half).
    assert alert["window"]["start"] <= first_burst_window < alert["window"]["end"]
    assert alert["share"] > alert["baseline"] + 0.3 and alert["volume"] >= 15
    assert len(alert["sample_ids"]) == 5 and alert["model_version"] == "gold"

    quiet = await run_stream(
        alert_settings(settings_factory, broker), process_factory, stream([], 24)
    )
    assert quiet == []


async def test_state_survives_a_restart(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    # The burst comes two windows after the restart: with warm-up at 5 windows, only a
    # baseline restored from the changelog can flag it.
    burst = Burst("ticker:T1", start=12, windows=1, share=0.85)
    docs = stream([burst], 18)
    restart_at = 10 * len(KEYS) * PER_WINDOW + 7
    found = await run_stream(
        alert_settings(settings_factory, broker), process_factory, docs, restart_at
    )
    assert [a["key"] for a in found] == ["ticker:T1"]
    burst_start = START_TS + 12 * WINDOW_S
    assert found[0]["window"]["start"] <= burst_start < found[0]["window"]["end"]


def with_emotion(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a multi-label emotion head's part: anger on negative items, joy on
    positive ones, nothing on neutral ones (as a declared emotion head would answer)."""
    sentiment = doc["labels"]["sentiment"]["label"]
    labels = {"negative": ["anger"], "positive": ["joy"]}.get(sentiment, [])
    scores = {"anger": 0.9 if "anger" in labels else 0.1, "joy": 0.9 if "joy" in labels else 0.1}
    return {**doc, "labels": {**doc["labels"], "emotion": {"labels": labels, "scores": scores}}}


async def test_a_multilabel_emotion_label_alerts(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    """Watching `emotion:anger` only: a burst of angry items on one key alerts once, with
    the task and label named, and no sentiment alert fires."""
    burst = Burst("ticker:T1", start=14, windows=2, share=0.8)
    settings = alert_settings(settings_factory, broker, alert_watch=["emotion:anger"])
    found = await run_stream(
        settings, process_factory, [with_emotion(d) for d in stream([burst], 24)]
    )
    assert len(found) == 1, found
    alert = found[0]
    assert (alert["key"], alert["task"], alert["label"]) == ("ticker:T1", "emotion", "anger")
    assert "sentiment" not in alert
    assert alert["share"] > alert["baseline"] + 0.3
