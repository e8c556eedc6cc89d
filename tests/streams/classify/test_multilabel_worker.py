"""A declared multi-label head end to end on a real broker: a model with sentiment and an
emotion head over GoEmotions (Ekman) is trained, exported and served by a running worker,
in-process and through a real Triton server whose config gains the new output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serving.model_store import ModelVersion
from serving.triton.server import TritonServer
from serving.triton_outputs import declared_outputs
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import publish
from streams.settings import Settings
from streams.testing.audit import audit_outputs
from tests.conftest import new_triton
from tests.streams.classify.test_worker import start_worker, stop_worker

pytestmark = pytest.mark.integration

EKMAN = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
POSTS = [
    "I can't believe they did this, I'm furious",
    "This is the best news I've heard all year, so happy!",
    "That movie scene was terrifying, I couldn't sleep",
    "Wow, I did not expect that at all",
    "ok, see you tomorrow",
    "I miss her so much, it hurts",
]


@pytest.fixture(scope="module")
def emotion_triton(
    emotion_version: ModelVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    with new_triton(
        emotion_version.path.parent.parent, tmp_path_factory.mktemp("triton")
    ) as server:
        yield server


def test_the_version_declares_a_multilabel_head_with_thresholds(
    emotion_version: ModelVersion,
) -> None:
    emotion = next(t for t in emotion_version.tasks if t.name == "emotion")
    assert emotion.kind == "multilabel" and emotion.labels == EKMAN
    assert len(emotion.thresholds) == len(EKMAN)
    assert all(0 < t < 1 for t in emotion.thresholds)
    assert emotion_version.manifest["outputs"] == [
        "sentiment_logits",
        "emotion_logits",
        "embedding",
    ]
    # Exported into a repository with a config: the new head's output was added to it.
    config = (emotion_version.path.parent / "config.pbtxt").read_text()
    assert "emotion_logits" in declared_outputs(config)


async def label_stream(settings: Settings, n: int) -> dict[str, dict[str, Any]]:
    """Publish `n` posts, run a worker until all are labeled; the documents by id."""
    records = [
        (
            f"post-{i}".encode(),
            json.dumps({"id": f"post-{i}", "text": POSTS[i % len(POSTS)]}).encode(),
        )
        for i in range(n)
    ]
    worker, task = await start_worker(settings)
    try:
        positions = await publish(settings, records)
        audit = await audit_outputs(settings, positions, by="position", timeout_s=120, settle_s=1)
    finally:
        await stop_worker(worker, task)
    assert not audit.missing(positions, "position")
    assert audit.duplicates() == 0
    return {str(d["id"]): d for d in audit.samples}


def check_documents(docs: dict[str, dict[str, Any]], thresholds: dict[str, float]) -> None:
    """Every document answers both heads; the emotion part is {labels, scores} and its
    labels are exactly those at or above their thresholds."""
    for doc in docs.values():
        labels = doc["labels"]
        assert isinstance(labels, dict) and set(labels) == {"sentiment", "emotion"}
        emotion = labels["emotion"]
        assert set(emotion) == {"labels", "scores"}
        assert set(emotion["scores"]) == set(EKMAN)
        above = {lab for lab, s in emotion["scores"].items() if s >= thresholds[lab]}
        assert set(emotion["labels"]) == above
        assert "label" in labels["sentiment"]
    furious = docs["post-0"]["labels"]["emotion"]
    assert furious["scores"]["anger"] > furious["scores"]["joy"]


async def test_a_worker_labels_a_stream_with_the_emotion_head_in_process(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    emotion_version: ModelVersion,
) -> None:
    settings = settings_factory(
        broker, model_repository=emotion_version.path.parent.parent, model_variant="fp32"
    )
    docs = await label_stream(settings, 24)
    emotion = next(t for t in emotion_version.tasks if t.name == "emotion")
    check_documents(docs, dict(zip(emotion.labels, emotion.thresholds, strict=True)))


async def test_a_worker_labels_the_same_through_triton(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    emotion_version: ModelVersion,
    emotion_triton: TritonServer,
) -> None:
    repo = emotion_version.path.parent.parent
    local = await label_stream(
        settings_factory(broker, model_repository=repo, model_variant="fp32"), len(POSTS)
    )
    remote = await label_stream(
        settings_factory(
            broker,
            model_repository=repo,
            backend="triton",
            triton_url=emotion_triton.grpc_url,
            triton_timeout_s=10.0,
        ),
        len(POSTS),
    )
    emotion = next(t for t in emotion_version.tasks if t.name == "emotion")
    check_documents(remote, dict(zip(emotion.labels, emotion.thresholds, strict=True)))
    for item_id, doc in local.items():
        assert remote[item_id]["labels"]["emotion"]["labels"] == doc["labels"]["emotion"]["labels"]
        assert (
            remote[item_id]["labels"]["sentiment"]["label"] == doc["labels"]["sentiment"]["label"]
        )
