"""The hybrid head learns online from feedback; accuracy is scored before each update."""

from __future__ import annotations

import numpy as np
import pytest

from online.hybrid import HybridHead


def separable(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """L2-normalised vectors around one direction per class, like pooled embeddings."""
    rng = np.random.default_rng(seed)
    labels = ["negative", "neutral", "positive"]
    rows = []
    for _ in range(n):
        label = labels[int(rng.integers(3))]
        vec = rng.normal(0, 0.15, 8)
        vec[labels.index(label)] += 1.0
        rows.append(((vec / np.linalg.norm(vec)).astype(np.float32), label))
    return rows


def test_it_learns_a_separable_task_and_beats_a_served_model_that_is_wrong_half_the_time() -> None:
    head = HybridHead(["sentiment"], window=200)
    for i, (vec, label) in enumerate(separable(1000, 0)):
        served = label if i % 2 else "neutral"
        head.learn("sentiment", vec, label, served)
    scores = head.accuracy("sentiment")
    assert scores["hybrid"] > 0.9
    assert 0.5 < scores["served"] < 0.75


def test_the_first_row_is_scored_before_anything_was_learned() -> None:
    head = HybridHead(["sentiment"])
    vec, label = separable(1, 1)[0]
    step = head.learn("sentiment", vec, label, label)
    assert step.hybrid_label is None and not step.hybrid_correct and step.served_correct
    assert head.learned["sentiment"] == 1


def test_reset_forgets_what_was_learned() -> None:
    head = HybridHead(["sentiment"])
    for vec, label in separable(50, 2):
        head.learn("sentiment", vec, label, label)
    head.reset()
    assert head.learned["sentiment"] == 0
    assert head.accuracy("sentiment") == {"hybrid": 0.0, "served": 0.0}


def test_an_unknown_task_is_an_error() -> None:
    with pytest.raises(KeyError, match="topic"):
        HybridHead(["sentiment"]).learn("topic", np.zeros(2, np.float32), "World", "World")
