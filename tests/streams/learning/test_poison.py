"""Poison through the real model watch and trainer processes: hostile records from a client
we did not write (librdkafka, in lz4, zstd, snappy and gzip batches) go to the dead-letter
topic with their bytes and reasons; the process stays up and handles the next good record."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online.feedback_records import INVALID_FEEDBACK
from online.jobs import Decision, FineTuneJob
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers, encode_embedding
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics
from streams.learning.records import INVALID_DECISION, INVALID_JOB, INVALID_LABELED_RECORD
from streams.learning.trainer_worker import READY_MARKER as TRAINER_READY
from streams.learning.watch_worker import READY_MARKER as WATCH_READY
from streams.learning.watch_worker import watch_topics
from streams.settings import Settings
from tests.kafka_support import by_reason, dead_letters, produce_librdkafka, scrape

pytestmark = pytest.mark.integration


def learning_settings(
    settings_factory: Callable[..., Settings], broker: EmbeddedBroker, **overrides: Any
) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings_factory(
        broker,
        feedback_topic=f"feedback-{tag}",
        drift_topic=f"drift-{tag}",
        jobs_topic=f"jobs-{tag}",
        decisions_topic=f"decisions-{tag}",
        watch_group_id=f"watch-{tag}",
        trainer_group_id=f"trainer-{tag}",
        **overrides,
    )


def wait_for_marker(proc: Any, log: Path, marker: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while marker not in (log.read_text(errors="replace") if log.exists() else ""):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no {marker!r} in {log}"
        time.sleep(0.2)


def prediction(item_id: str, width: int = 384, **changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": item_id,
        "text": f"text of {item_id}",
        "labels": {
            "sentiment": {"label": "positive", "score": 0.9},
            "topic": {"label": "Business", "score": 0.8},
        },
        "model": {"name": "feedpulse_classifier", "version": "1"},
        "embedding": encode_embedding(np.linspace(-1, 1, width, dtype=np.float32)),
    }
    doc.update(changes)
    return json.dumps(doc).encode()


LABELED_POISON: list[tuple[bytes | None, bytes | None]] = [
    (b"not-json", b"this is not json {"),
    (b"null", None),
    (b"array", b'[{"id": "a"}]'),
    (b"narrow", prediction("narrow", width=10)),
    (b"nan", prediction("nan").replace(b"0.9", b"NaN")),
    (b"label", prediction("label").replace(b'"positive"', b'"ecstatic"')),
    (b"score", prediction("score").replace(b"0.9", b"7")),
    (b"embed", prediction("embed", embedding="%%% not base64")),
    (b"binary", bytes(range(256))),
]
FEEDBACK_POISON: list[tuple[bytes | None, bytes | None]] = [
    (None, b"{not json"),
    (None, None),
    (b"task", json.dumps({"id": "good-1", "task": "mood", "label": "positive"}).encode()),
    (b"label", json.dumps({"id": "good-1", "task": "sentiment", "label": 3}).encode()),
    (b"id", json.dumps({"id": ["x"], "task": "sentiment", "label": "positive"}).encode()),
]
DECISION_POISON: list[tuple[bytes | None, bytes | None]] = [
    (b"m", b"\xff\xfe"),
    (b"m", json.dumps({"job_id": "j", "model": "m", "action": "exploded"}).encode()),
    (b"m", b"[]"),
]


def assert_dead_letters(
    grouped: dict[str, list[Any]], reason: str, poison: list[Any], stage: str
) -> None:
    got = grouped.get(reason, [])
    # Original values and keys; a record with neither is keyed by its source position.
    values = sorted(r.value or b"" for r in got)
    assert values == sorted(v or b"" for _, v in poison), (reason, got)
    keys = {r.key for r in got}
    assert {k for k, _ in poison if k is not None} <= keys
    for rec in got:
        headers = decode_headers(rec.headers)
        assert headers[DLQ_HEADER_PREFIX + "stage"] == stage
        assert headers[DLQ_HEADER_PREFIX + "error"]


async def test_watch_dead_letters_poison_on_every_topic_and_keeps_joining(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = learning_settings(settings_factory, broker, watch_metrics_port=port)
    await ensure_topics(settings, watch_topics(settings))
    watch = process_factory(settings, "watch", log_name="watch")
    wait_for_marker(watch, tmp_path / "watch-0.log", WATCH_READY)

    # A good prediction first: its embedding width is the one the version's others must have.
    good = [(b"good-1", prediction("good-1"))]
    produce_librdkafka(settings.bootstrap_servers, settings.output_topic, good, "gzip")
    produce_librdkafka(settings.bootstrap_servers, settings.output_topic, LABELED_POISON, "lz4")
    produce_librdkafka(settings.bootstrap_servers, settings.feedback_topic, FEEDBACK_POISON, "zstd")
    produce_librdkafka(
        settings.bootstrap_servers, settings.decisions_topic, DECISION_POISON, "snappy"
    )
    feedback = json.dumps({"id": "good-1", "task": "sentiment", "label": "negative"}).encode()
    produce_librdkafka(
        settings.bootstrap_servers, settings.feedback_topic, [(None, feedback)], "lz4"
    )

    # Learned from, whichever arrived first (the feedback may wait for its prediction).
    joined = 'feedpulse_drift_window_items{detector="sentiment.error_rate"}'
    deadline = time.monotonic() + 60
    while scrape(port).get(joined, 0.0) < 1:
        assert watch.poll() is None, "the model watch died"
        assert time.monotonic() < deadline, scrape(port)
        await asyncio.sleep(0.5)
    metrics = scrape(port)
    assert metrics["feedpulse_watch_predictions_total"] == 1

    expected = len(LABELED_POISON) + len(FEEDBACK_POISON) + len(DECISION_POISON)
    letters: list[Any] = []
    while len(letters) < expected and time.monotonic() < deadline:
        letters = await dead_letters(settings)
    grouped = by_reason(letters)
    assert sorted(grouped) == sorted([INVALID_DECISION, INVALID_FEEDBACK, INVALID_LABELED_RECORD])
    assert_dead_letters(grouped, INVALID_LABELED_RECORD, LABELED_POISON, "watch")
    assert_dead_letters(grouped, INVALID_FEEDBACK, FEEDBACK_POISON, "watch")
    assert_dead_letters(grouped, INVALID_DECISION, DECISION_POISON, "watch")
    unreadable = 'feedpulse_watch_unreadable_total{topic="%s"}'
    assert metrics[unreadable % settings.output_topic] == len(LABELED_POISON)
    assert metrics[unreadable % settings.decisions_topic] == len(DECISION_POISON)
    assert watch.poll() is None, "the model watch died"
    watch.send_signal(signal.SIGTERM)
    assert watch.wait(timeout=30) == 0


def job_poison() -> list[tuple[bytes | None, bytes | None]]:
    doc = json.loads(FineTuneJob("feedpulse_classifier", 1, {"sentiment": []}, []).encode())

    def with_rows(packed: bytes) -> bytes:
        return json.dumps(doc | {"rows_gzip_b64": base64.b64encode(packed).decode()}).encode()

    rows = json.dumps({"sentiment": [["a text", "positive"]] * 50}).encode()
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    return [
        (b"truncated", with_rows(gzip.compress(rows)[:-12])),
        (b"list-rows", with_rows(gzip.compress(b'[["a text", "positive"]]'))),
        (b"bomb", with_rows(bomb)),
        (b"not-json", b"{job"),
        (b"null", None),
        (b"base64", json.dumps(doc | {"rows_gzip_b64": "***"}).encode()),
    ]


async def test_trainer_dead_letters_poison_jobs_and_runs_the_next_one(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    settings = learning_settings(settings_factory, broker)
    await ensure_topics(
        settings, [settings.jobs_topic, settings.decisions_topic, settings.dlq_topic]
    )
    poison = job_poison()
    produce_librdkafka(settings.bootstrap_servers, settings.jobs_topic, poison, "zstd")
    # The next good job: its base version is not served, so the trainer answers at once.
    good = FineTuneJob("feedpulse_classifier", 999, {"sentiment": [("a text", "positive")]}, [])
    produce_librdkafka(
        settings.bootstrap_servers, settings.jobs_topic, [(b"good", good.encode())], "lz4"
    )
    trainer = process_factory(settings, "trainer", log_name="trainer")
    wait_for_marker(trainer, tmp_path / "trainer-0.log", TRAINER_READY)

    decisions: list[Decision] = []
    deadline = time.monotonic() + 120
    while not decisions:
        assert trainer.poll() is None, (tmp_path / "trainer-0.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no decision for the good job"
        async for rec in read_topics(settings, [settings.decisions_topic], idle_timeout_s=2):
            decisions.append(Decision.decode(rec.value))
    assert [(d.job_id, d.action) for d in decisions] == [(good.id, "skipped")]
    grouped = by_reason(await dead_letters(settings))
    assert sorted(grouped) == [INVALID_JOB]
    assert_dead_letters(grouped, INVALID_JOB, poison, "trainer")
    assert trainer.poll() is None, "the trainer died"
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=30) == 0
