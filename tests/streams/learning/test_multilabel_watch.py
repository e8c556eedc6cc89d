"""The model watch on a real broker with a served multi-label emotion head: predictions of
that head and multi-label feedback (from librdkafka) are joined and learned from per label;
feedback that does not fit the head is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online.feedback_records import INVALID_FEEDBACK
from serving.model_store import ModelVersion
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers, encode_embedding
from streams.kafka.topics import ensure_topics
from streams.learning.watch_worker import READY_MARKER, watch_topics
from streams.settings import Settings
from tests.kafka_support import by_reason, dead_letters, produce_librdkafka, scrape
from tests.streams.learning.test_poison import learning_settings, wait_for_marker

pytestmark = pytest.mark.integration


def emotion_prediction(item_id: str, version: ModelVersion) -> bytes:
    """A labeled document as the worker writes it for the emotion model."""
    emotion = next(t for t in version.tasks if t.name == "emotion")
    scores = {label: 0.05 for label in emotion.labels} | {"anger": 0.9}
    doc: dict[str, Any] = {
        "id": item_id,
        "text": f"so angry about {item_id}",
        "labels": {
            "sentiment": {"label": "negative", "score": 0.8, "scores": {}},
            "emotion": {"labels": ["anger"], "scores": scores},
        },
        "model": {"name": "feedpulse_classifier", "version": str(version.version)},
        "embedding": encode_embedding(np.linspace(-1, 1, 384, dtype=np.float32)),
    }
    return json.dumps(doc).encode()


def feedback(item_id: str, **answer: Any) -> tuple[bytes | None, bytes]:
    return None, json.dumps({"id": item_id, "task": "emotion", **answer}).encode()


async def test_the_watch_learns_from_multilabel_feedback_and_dead_letters_misfits(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    emotion_version: ModelVersion,
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = learning_settings(
        settings_factory,
        broker,
        watch_metrics_port=port,
        model_repository=emotion_version.path.parent.parent,
    )
    await ensure_topics(settings, watch_topics(settings))
    watch = process_factory(settings, "watch", log_name="watch")
    wait_for_marker(watch, tmp_path / "watch-0.log", READY_MARKER)

    predictions = [
        (f"post-{i}".encode(), emotion_prediction(f"post-{i}", emotion_version)) for i in range(3)
    ]
    produce_librdkafka(settings.bootstrap_servers, settings.output_topic, predictions, "zstd")
    misfits = [
        feedback("post-0", labels=["rage"]),  # not one of the head's labels
        feedback("post-0", label="anger"),  # `label` for a multi-label task
        feedback("post-0", labels=["anger", "anger"]),  # a label twice
    ]
    good = [
        feedback("post-0", labels=["anger", "disgust"]),
        feedback("post-1", labels=["anger"]),
        feedback("post-2", labels=[]),  # none of them: real information too
    ]
    produce_librdkafka(settings.bootstrap_servers, settings.feedback_topic, misfits + good, "lz4")

    joined = 'feedpulse_drift_window_items{detector="emotion.error_rate:anger"}'
    deadline = time.monotonic() + 90
    while scrape(port).get(joined, 0.0) < len(good):
        assert watch.poll() is None, "the model watch died"
        assert time.monotonic() < deadline, {
            k: v for k, v in scrape(port).items() if "emotion" in k
        }
        await asyncio.sleep(0.5)
    metrics = scrape(port)
    assert metrics['feedpulse_drift_window_items{detector="emotion.error_rate:disgust"}'] == len(
        good
    )

    letters: list[Any] = []
    while len(letters) < len(misfits) and time.monotonic() < deadline:
        letters = await dead_letters(settings)
    grouped = by_reason(letters)
    assert sorted(grouped) == [INVALID_FEEDBACK]
    assert sorted(r.value for r in grouped[INVALID_FEEDBACK]) == sorted(v for _, v in misfits)
    errors = " | ".join(decode_headers(r.headers)[DLQ_HEADER_PREFIX + "error"] for r in letters)
    assert "rage" in errors
    assert watch.poll() is None, "the model watch died"
    watch.send_signal(signal.SIGTERM)
    assert watch.wait(timeout=30) == 0
