"""Feedback is untrusted input (any bytes give a Feedback or a short reason), and the join
holds its predictions and waiting feedback within byte budgets, counted exactly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from online.feedback import FeedbackJoin
from online.feedback_records import (
    MAX_REASON_CHARS,
    Feedback,
    Observation,
    feedback_bytes,
    observation_bytes,
    parse_feedback,
)
from serving.tasks import TaskHead

LABELS = {"sentiment": ("negative", "neutral", "positive"), "topic": ("markets", "tech")}
TAGS = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel")
TASKS = [*(TaskHead(name, labels) for name, labels in LABELS.items()), TAGS]
FUZZ = settings(max_examples=200, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
names = ["sentiment", "topic", "tags", "neutral", "tech", "bug", "", "mood"]
maybe = st.sampled_from(names) | st.lists(st.sampled_from(names), max_size=4) | json_values
records = st.dictionaries(
    st.sampled_from(["id", "task", "label", "labels", "text", "other"]), maybe
)


def check(result: Feedback | str) -> None:
    if isinstance(result, str):
        assert 0 < len(result) <= MAX_REASON_CHARS
        return
    assert isinstance(result, Feedback)
    assert 0 < len(result.id) <= 512
    if result.task == TAGS.name:
        assert isinstance(result.label, tuple) and set(result.label) <= set(TAGS.labels)
    else:
        assert result.label in LABELS[result.task]
    assert result.text is None or 0 < len(result.text) <= 20_000


@FUZZ
@given(st.binary(max_size=1000) | st.none())
def test_parse_feedback_never_raises_on_arbitrary_bytes(value: bytes | None) -> None:
    check(parse_feedback(value, TASKS))


@FUZZ
@given(json_values | records)
def test_parse_feedback_never_raises_on_arbitrary_json(value: Any) -> None:
    check(parse_feedback(json.dumps(value).encode(), TASKS))


@FUZZ
@given(
    st.text(min_size=1, max_size=512) | st.integers(-(10**100), 10**100),
    st.sampled_from(sorted(LABELS)),
    st.data(),
)
def test_valid_feedback_parses(item_id: str | int, task: str, data: st.DataObject) -> None:
    label = data.draw(st.sampled_from(LABELS[task]))
    text = data.draw(st.none() | st.text(min_size=1, max_size=50).filter(str.strip))
    value = json.dumps({"id": item_id, "task": task, "label": label, "text": text}).encode()
    assert parse_feedback(value, TASKS, ("t", 0, 1)) == Feedback(str(item_id), task, label, text)


@FUZZ
@given(st.lists(st.sampled_from(TAGS.labels), unique=True), st.text(min_size=1, max_size=512))
def test_valid_multi_label_feedback_parses(labels: list[str], item_id: str) -> None:
    value = json.dumps({"id": item_id, "task": "tags", "labels": labels}).encode()
    in_order = tuple(label for label in TAGS.labels if label in labels)
    assert parse_feedback(value, TASKS) == Feedback(item_id, "tags", in_order)


def test_parse_feedback_bounds_ids_and_texts() -> None:
    base = {"task": "sentiment", "label": "neutral"}
    assert "'id'" in str(parse_feedback(json.dumps({**base, "id": "x" * 513}).encode(), TASKS))
    assert "'id'" in str(parse_feedback(json.dumps({**base, "id": 10**600}).encode(), TASKS))
    long_text = {**base, "id": "a", "text": "x" * 20_001}
    assert "'text'" in str(parse_feedback(json.dumps(long_text).encode(), TASKS))
    assert "missing" in str(parse_feedback(json.dumps({"id": "a"}).encode(), TASKS))


def obs(item_id: str, at: float = 0.0, text_chars: int = 10_000) -> Observation:
    emb = np.zeros(384, np.float32)
    return Observation(item_id, "x" * text_chars, {"sentiment": "neutral"}, emb, "1", at)


def fb(item_id: str, text: str | None = None) -> Feedback:
    return Feedback(item_id, "sentiment", "neutral", text)


def test_many_large_predictions_stay_within_the_byte_budget_newest_kept() -> None:
    join = FeedbackJoin(window_s=1e9, max_bytes=1 << 20)
    per_item = observation_bytes(obs("p00000"))
    for i in range(5000):
        join.observe(obs(f"p{i:05d}", float(i)))
        assert join.bytes[0] <= 1 << 20
    kept, _ = join.sizes
    assert kept == (1 << 20) // per_item
    assert join.add(fb("p04999"), 0.0)[0] is not None
    assert join.add(fb("p00000"), 0.0) == (None, None)


def test_a_prediction_alone_over_the_budget_is_not_kept_but_still_joins_its_feedback() -> None:
    join = FeedbackJoin(max_bytes=5000)
    join.add(fb("big"), 0.0)
    (joined,) = join.observe(obs("big"))
    assert joined.observation.id == "big" and join.sizes == (0, 0) and join.bytes == (0, 0)


def test_waiting_feedback_over_the_byte_budget_comes_back() -> None:
    one = feedback_bytes(fb("a000", "t" * 1000))
    join = FeedbackJoin(waiting_max_bytes=3 * one)
    for i in range(3):
        assert join.add(fb(f"a{i:03d}", "t" * 1000), 0.0) == (None, None)
    late = fb("a003", "t" * 1000)
    assert join.add(late, 0.0) == (None, late)
    assert join.bytes == (0, 3 * one)
    small = fb("b")  # no text: still too big for what is left
    assert join.add(small, 0.0) == (None, small)


def test_waiting_feedback_for_one_id_is_capped() -> None:
    join = FeedbackJoin(max_waiting_per_id=3)
    for _ in range(3):
        assert join.add(fb("same"), 0.0) == (None, None)
    extra = fb("same")
    assert join.add(extra, 0.0) == (None, extra)
    assert join.add(fb("other"), 0.0) == (None, None)
    assert len(join.observe(obs("same"))) == 3


def test_byte_totals_follow_observe_join_expire_and_re_observe() -> None:
    join = FeedbackJoin(window_s=60)
    join.observe(obs("p", 0.0))
    join.observe(obs("p", 1.0, text_chars=10))  # the same id again replaces, not adds
    assert join.bytes == (observation_bytes(obs("p", 1.0, text_chars=10)), 0)
    join.add(fb("w", "some text"), 0.0)
    join.add(fb("w"), 0.0)
    assert join.bytes[1] == feedback_bytes(fb("w", "some text")) + feedback_bytes(fb("w"))
    assert len(join.expire(now=100.0)) == 2
    assert join.bytes == (0, 0) and join.sizes == (0, 0)
    join.add(fb("q"), 100.0)
    join.observe(obs("q", 100.0))
    assert join.bytes == (observation_bytes(obs("q", 100.0)), 0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["observe", "add", "expire"]),
        st.sampled_from([f"i{n}" for n in range(8)]),
        st.integers(0, 3000),
    ),
    max_size=60,
)


@FUZZ
@given(operations)
def test_byte_totals_are_exact_and_within_budget_after_any_operations(ops: list[Any]) -> None:
    join = FeedbackJoin(
        window_s=50, max_items=5, max_bytes=8000, waiting_max_bytes=6000, max_waiting_per_id=2
    )
    for now, (op, item_id, size) in enumerate(ops):
        if op == "observe":
            join.observe(obs(item_id, float(now), text_chars=size))
        elif op == "add":
            join.add(fb(item_id, "t" * size or None), float(now))
        else:
            join.expire(float(now + size // 30))
        kept = sum(observation_bytes(o) for o, _ in join._predictions.values())
        waiting = sum(feedback_bytes(f) for w in join._waiting.values() for f in w.feedback)
        assert join.bytes == (kept, waiting)
        assert kept <= 8000 and waiting <= 6000
        assert all(len(w.feedback) <= 2 for w in join._waiting.values())
