"""Feedback parsing and the id join within a window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from online.feedback import FeedbackJoin
from online.feedback_records import Feedback, Observation, parse_feedback
from serving.tasks import TaskHead

TAGS = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel")
TASKS = (TaskHead("sentiment", ("negative", "neutral", "positive")), TAGS)


def obs(item_id: str, at: float = 0.0) -> Observation:
    return Observation(item_id, "text", {"sentiment": "neutral"}, np.zeros(4, np.float32), "1", at)


def test_parse_feedback_accepts_ids_as_strings_or_integers_and_optional_text() -> None:
    fb = parse_feedback(b'{"id": 7, "task": "sentiment", "label": "positive", "text": "up"}', TASKS)
    assert fb == Feedback("7", "sentiment", "positive", "up")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"", "no value"),
        (b"not json", "invalid JSON"),
        (b"[1]", "JSON object"),
        (b'{"task": "sentiment", "label": "positive"}', "'id'"),
        (b'{"id": true, "task": "sentiment", "label": "positive"}', "'id'"),
        (b'{"id": "a", "task": "mood", "label": "positive"}', "'task'"),
        (b'{"id": "a", "task": ["sentiment"], "label": "positive"}', "'task'"),
        (b'{"id": "a", "task": "sentiment", "label": "great"}', "'label'"),
        (b'{"id": "a", "task": "sentiment", "label": "positive", "text": 3}', "'text'"),
        (json.dumps({"id": "a", "text": "x" * 70_000}).encode(), "limit"),
    ],
)
def test_parse_feedback_says_what_is_wrong(value: bytes, error: str) -> None:
    result = parse_feedback(value, TASKS)
    assert isinstance(result, str) and error in result


def test_multi_label_feedback_gives_the_label_set_in_the_task_order() -> None:
    fb = parse_feedback(b'{"id": "a", "task": "tags", "labels": ["bug", "urgent"]}', TASKS)
    assert fb == Feedback("a", "tags", ("urgent", "bug"))


def test_multi_label_feedback_may_say_that_no_label_applies() -> None:
    fb = parse_feedback(b'{"id": "a", "task": "tags", "labels": [], "text": "hi"}', TASKS)
    assert fb == Feedback("a", "tags", (), "hi")


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"labels": ["bug", "nope"]}, "'labels' must be among ['urgent', 'billing', 'bug']"),
        ({"labels": ["bug", "bug"]}, "'labels' names 'bug' more than once"),
        ({"label": "bug"}, "'label' is for multi-class tasks: tags is multi-label"),
        ({"label": "bug", "labels": ["bug"]}, "'label' is for multi-class tasks"),
        ({}, "'labels' is missing"),
        ({"labels": "bug"}, "'labels' must be a list"),
        ({"labels": [1]}, "'labels' must be a list"),
        ({"task": "sentiment", "labels": ["neutral"]}, "'labels' is for multi-label tasks"),
        ({"task": "sentiment"}, "'label' is missing"),
        ({"task": "mood", "labels": ["bug"]}, "'task' must be one of ['sentiment', 'tags']"),
    ],
)
def test_feedback_whose_answer_does_not_fit_its_task_says_why(
    record: dict[str, object], error: str
) -> None:
    value = json.dumps({"id": "a", "task": "tags", **record}).encode()
    result = parse_feedback(value, TASKS)
    assert isinstance(result, str) and error in result, result


def test_feedback_after_its_prediction_joins_at_once() -> None:
    join = FeedbackJoin(window_s=60)
    join.observe(obs("a"))
    joined, overflow = join.add(Feedback("a", "sentiment", "negative"), now=1.0)
    assert joined is not None and joined.observation.id == "a" and overflow is None


def test_feedback_before_its_prediction_waits_and_joins_when_it_arrives() -> None:
    join = FeedbackJoin(window_s=60)
    fb = Feedback("a", "sentiment", "negative", origin=("feeds.feedback", 2, 41))
    assert join.add(fb, now=0.0) == (None, None)
    assert join.waiting_origins() == [("feeds.feedback", 2, 41)]
    (joined,) = join.observe(obs("a", 5.0))
    assert joined.feedback == fb
    assert join.sizes == (1, 0)


def test_feedback_that_never_finds_its_prediction_comes_back_after_the_window() -> None:
    join = FeedbackJoin(window_s=60)
    fb = Feedback("gone", "sentiment", "negative")
    join.add(fb, now=0.0)
    assert join.expire(now=59.0) == []
    assert join.expire(now=61.0) == [fb]
    assert join.sizes == (0, 0)


def test_predictions_are_forgotten_after_the_window_and_beyond_the_cap() -> None:
    join = FeedbackJoin(window_s=60, max_items=2)
    for i, at in enumerate((0.0, 10.0, 20.0)):
        join.observe(obs(f"p{i}", at))
    assert join.sizes == (2, 0)  # p0 fell out at the cap
    join.expire(now=75.0)  # p1 (t=10) is older than the window
    assert join.add(Feedback("p1", "sentiment", "neutral"), 75.0) == (None, None)
    assert join.add(Feedback("p2", "sentiment", "neutral"), 75.0)[0] is not None


def test_a_full_waiting_room_hands_feedback_back_instead_of_dropping_it() -> None:
    join = FeedbackJoin(window_s=60, max_items=1)
    join.add(Feedback("a", "sentiment", "neutral"), 0.0)
    late = Feedback("b", "sentiment", "neutral")
    assert join.add(late, 0.0) == (None, late)
