"""Poison through a real alert worker: records a client we did not write (librdkafka, lz4
and zstd batches) puts on the labeled topic and on the app's own keyed topic go to the
dead-letter topic with their bytes and reasons; the worker stays up and alerts still fire."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from streams.alerts.records import INVALID_ALERT_EVENT, INVALID_LABELED_RECORD
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.testing.replay import Burst, labeled_doc
from tests.alert_support import (
    KEYS,
    PER_WINDOW,
    START_TS,
    alert_settings,
    metric,
    publish,
    stream,
    wait_processed,
)
from tests.kafka_support import dead_letters, produce_librdkafka
from tests.streams.alerts.test_app import alerts

pytestmark = pytest.mark.integration

LABELED_POISON: list[tuple[bytes, bytes | None]] = [
    (b"not-json", b"this is not json {"),
    (b"null", None),
    (b"array", b'[{"id": "a"}]'),
    (b"types", json.dumps({"id": 7, "labels": "x", "input": {"timestamp_ms": "soon"}}).encode()),
    (
        b"no-time",
        json.dumps(labeled_doc("nt", "t", "negative", "ticker:T0", 0) | {"input": {}}).encode(),
    ),
    (b"binary", bytes(range(256))),
]
KEYED_POISON: list[bytes | None] = [
    b"\x00\x01 not json",
    b'{"key": "ticker:T0", "ts": NaN, "s": "negative", "id": "x"}',
    None,
]


async def test_poison_is_dead_lettered_and_the_worker_keeps_alerting(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = alert_settings(settings_factory, broker)
    await ensure_topics(
        settings, [settings.output_topic, settings.alerts_topic, settings.dlq_topic]
    )
    worker = process_factory(settings, "alerts", log_name="alerts")
    future = labeled_doc("from-2100", "text", "neutral", "ticker:T3", 0)
    future["input"]["timestamp_ms"] = 4_102_444_800_000
    labeled = [*LABELED_POISON, (b"ticker:T3", json.dumps(future).encode())]
    produce_librdkafka(settings.bootstrap_servers, settings.output_topic, labeled, "lz4")

    burst = Burst("ticker:T3", start=14, windows=2, share=0.8)
    docs = stream([burst], 24)
    split = 8 * len(KEYS) * PER_WINDOW
    await publish(settings, docs[:split])
    await wait_processed(settings, split + 1)  # the future-dated item counts too
    keyed_topic = f"{settings.alert_app_id}-keyed"
    produce_librdkafka(
        settings.bootstrap_servers, keyed_topic, [(None, value) for value in KEYED_POISON], "zstd"
    )
    await publish(settings, docs[split:])
    await wait_processed(settings, len(docs) + 1)
    await asyncio.sleep(3 * 0.5 + 2)  # ticks close the last windows

    found = await alerts(settings)
    assert [(a["key"], a["sentiment"]) for a in found] == [("ticker:T3", "negative")], found
    assert found[0]["window"]["start"] <= START_TS + burst.start * 10.0 < found[0]["window"]["end"]

    letters = await dead_letters(settings)
    by_reason: dict[str, list[Any]] = {}
    for rec in letters:
        headers = decode_headers(rec.headers)
        assert (
            headers[DLQ_HEADER_PREFIX + "stage"] == "alerts"
            and headers[DLQ_HEADER_PREFIX + "error"]
        )
        by_reason.setdefault(headers[DLQ_HEADER_PREFIX + "reason"], []).append(rec)
    assert sorted(by_reason) == [INVALID_ALERT_EVENT, INVALID_LABELED_RECORD], by_reason
    assert sorted((r.key, r.value) for r in by_reason[INVALID_LABELED_RECORD]) == sorted(
        LABELED_POISON, key=lambda kv: (kv[0], kv[1] or b"")
    )
    assert sorted(r.value or b"" for r in by_reason[INVALID_ALERT_EVENT]) == sorted(
        v or b"" for v in KEYED_POISON
    )
    for rec in by_reason[INVALID_LABELED_RECORD]:
        headers = decode_headers(rec.headers)
        assert headers[DLQ_HEADER_PREFIX + "source.topic"] == settings.output_topic

    dead = "feedpulse_alert_dead_lettered_total{reason=%s}"
    assert metric(settings, dead % f'"{INVALID_LABELED_RECORD}"') == len(LABELED_POISON)
    assert metric(settings, dead % f'"{INVALID_ALERT_EVENT}"') == len(KEYED_POISON)
    assert metric(settings, "feedpulse_alert_future_timestamps_total") == 1
    assert metric(settings, "feedpulse_alert_unreadable_records_total") == len(LABELED_POISON)
    assert metric(settings, "feedpulse_alert_watermark_seconds") < START_TS + 24 * 10.0
    assert worker.poll() is None, "the alert worker died"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
