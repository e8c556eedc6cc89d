"""What the model watch reads from the labeled topic: each watched task's answer in its
kind's shape (a label and score, or a label set and every label's score), checked whole."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from serving.backends.contract import task_prediction
from serving.tasks import DEFAULT_TASKS, TaskHead
from streams.learning.records import read_prediction

SENTIMENT = DEFAULT_TASKS[0]
TAGS = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel", (0.5, 0.5, 0.3))
HEADS = {t.name: t for t in (SENTIMENT, TAGS)}


def document(**labels: Any) -> bytes:
    """A labeled document as a worker writes it (the contract's per-task documents)."""
    answers = {
        "sentiment": task_prediction(SENTIMENT, np.array([0.1, 0.2, 0.7], np.float32)).document(),
        "tags": task_prediction(TAGS, np.array([0.9, 0.1, 0.4], np.float32)).document(),
        **labels,
    }
    doc = {"id": "a", "text": "t", "labels": answers, "model": {"name": "m", "version": 3}}
    return json.dumps(doc).encode()


def test_both_kinds_of_answer_are_read_with_their_scores() -> None:
    result = read_prediction(document(), HEADS, {}, now=5.0)
    assert not isinstance(result, str), result
    obs, scores = result
    assert obs.labels == {"sentiment": "positive", "tags": ("urgent", "bug")}
    assert scores["sentiment"] == pytest.approx(0.7)
    assert scores["tags"] == pytest.approx({"urgent": 0.9, "billing": 0.1, "bug": 0.4})
    assert (obs.model_version, obs.seen_at) == ("3", 5.0)


def test_a_multi_label_answer_may_carry_no_label() -> None:
    result = read_prediction(document(tags={"labels": [], "scores": {"bug": 0.1}}), HEADS, {}, 0)
    assert not isinstance(result, str) and result[0].labels["tags"] == ()


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ({"tags": {"label": "bug", "score": 0.9}}, "labels.tags: a multi-label task answers"),
        ({"sentiment": {"labels": ["positive"], "scores": {}}}, "a multi-class task answers"),
        ({"tags": {"labels": ["refund"], "scores": {}}}, "labels.tags.labels: 'refund'"),
        ({"tags": {"labels": [], "scores": {"refund": 0.2}}}, "labels.tags.scores: 'refund'"),
        ({"tags": {"labels": ["bug", "bug"], "scores": {}}}, "more than once"),
        ({"tags": {"labels": ["bug"], "scores": {"bug": 1.5}}}, "labels.tags.multilabel.scores"),
        ({"tags": {"labels": "bug", "scores": {}}}, "labels.tags.multilabel.labels"),
        ({"sentiment": {"label": "ecstatic", "score": 0.9}}, "labels.sentiment.label"),
    ],
)
def test_an_answer_that_does_not_fit_its_task_says_why(answers: Any, error: str) -> None:
    result = read_prediction(document(**answers), HEADS, {}, now=0.0)
    assert isinstance(result, str) and error in result, result


def test_a_task_the_watch_does_not_watch_passes_unchecked() -> None:
    result = read_prediction(document(), {"sentiment": SENTIMENT}, {}, now=0.0)
    assert not isinstance(result, str) and result[0].labels["tags"] == ("urgent", "bug")
