"""What the alert app reads, validated once at the edge: labeled documents, keyed events
and restored key states; every failure is an error text, never an exception."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.alerts.records import (
    KeyedItem,
    LabeledRecord,
    StateCodec,
    Tick,
    encode_item,
    parse_event,
    parse_labeled,
    state_bytes,
    state_error,
    trusted_event_time,
)
from streams.alerts.spike_detector import SpikeDetector, SpikeSettings, new_state

GOOD = {
    "id": "a1",
    "source": "wire",
    "labels": {"sentiment": {"label": "negative", "score": 0.9}, "topic": {"label": "World"}},
    "model": {"name": "m", "version": "3"},
    "input": {"timestamp_ms": 1_700_000_000_000},
    "meta": {"ticker": "ACME"},
    "text": "ignored",
}


def variant(**changes: Any) -> bytes:
    doc = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for name in parents:
            target = target[name]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(doc).encode()


def test_a_labeled_document_is_read() -> None:
    record = parse_labeled(json.dumps(GOOD).encode(), 10_000)
    assert isinstance(record, LabeledRecord)
    assert (record.id, record.sentiment, record.model_version) == ("a1", "negative", "3")
    assert record.input.timestamp_ms == 1_700_000_000_000
    assert record.key_fields()["labels"] == {"topic": {"label": "World"}}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "null value"),
        (b"not json", "Invalid JSON"),
        (b"[1, 2]", "<record>: Input should be an object"),
        (b"\xff\xfe{}", "Invalid JSON"),
        (b"[" * 4000 + b"]" * 4000, "recursion limit"),
        (b'{"id": "x"}', "labels: Field required"),
        (variant(id=5), "id: Input should be a valid string"),
        (variant(id=""), "id: String should have at least 1 character"),
        (variant(labels__sentiment__label=None), "labels.sentiment: Value error, a task gives"),
        (variant(labels__sentiment__label=5), "labels.sentiment.label: Input should be a valid"),
        (variant(labels__sentiment__labels=["negative"]), "either `label` (multi-class)"),
        (variant(labels__emotion={"labels": "anger"}), "labels.emotion.labels: Input should"),
        (variant(labels__emotion={"labels": [""]}), "labels.emotion.labels.0"),
        (variant(labels=[]), "labels: Input should be an object"),
        (variant(input__timestamp_ms="1700000000000"), "input.timestamp_ms"),
        (variant(input__timestamp_ms=True), "input.timestamp_ms"),
        (variant(input__timestamp_ms=None), "input.timestamp_ms"),
        (variant(meta=[1]), "meta: Input should be an object"),
        (variant(source=7), "source"),
        (variant(model__version=3), "model.version"),
        (b" " * 20_000, "exceeds the 10000-byte limit"),
    ],
)
def test_a_bad_labeled_record_is_an_error_text(value: bytes | None, error: str) -> None:
    result = parse_labeled(value, 10_000)
    assert isinstance(result, str) and error in result, result
    assert len(result) <= 1000


def test_an_error_text_never_repeats_the_input() -> None:
    secret = "x" * 500
    result = parse_labeled(variant(id=[secret]), 10_000)
    assert isinstance(result, str) and secret not in result


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from([*GOOD, "label", "x"]), children, max_size=5)
        ),
        max_leaves=30,
    )
)
def test_any_json_is_read_or_refused_never_raised(doc: Any) -> None:
    result = parse_labeled(json.dumps(doc).encode(), 10_000)
    assert isinstance(result, LabeledRecord | str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_never_raised(value: bytes) -> None:
    assert isinstance(parse_labeled(value, 10_000), LabeledRecord | str)
    assert isinstance(parse_event(value), Tick | KeyedItem | str)


@pytest.mark.parametrize(
    ("ms", "trusted"),
    [
        (1_700_000_000_000, True),
        (0, True),
        (-1, False),
        (math.nan, False),
        (math.inf, False),
        (4_102_444_800_000, False),  # 2100-01-01
        ((2_000_000_000 + 299) * 1000, True),  # within the skew
        ((2_000_000_000 + 301) * 1000, False),
    ],
)
def test_event_time_is_trusted_up_to_the_skew(ms: float, trusted: bool) -> None:
    ts = trusted_event_time(ms, now=2_000_000_000.0, max_skew_s=300.0)
    assert (ts is not None) == trusted
    if trusted:
        assert ts == ms / 1000


def test_keyed_events_round_trip_and_bad_ones_are_refused() -> None:
    item = KeyedItem(key="ticker:A", ts=12.5, s="negative", id="x", v="3", arrival=True)
    assert parse_event(encode_item(item)) == item
    plain = encode_item(KeyedItem(key="k", ts=1.0, s="neutral", id="y"))
    assert b"arrival" not in plain and b'"v"' not in plain
    assert parse_event(b'{"tick":true}') == Tick(tick=True)
    for bad, error in [
        (None, "null value"),
        (b"{", "Invalid JSON"),
        (b'{"tick":false}', "tick.tick"),
        (b'{"key":"k","ts":NaN,"s":"negative","id":"x"}', "item.ts"),
        (b'{"key":"k","ts":-1.0,"s":"negative","id":"x"}', "item.ts"),
        (b'{"key":"k","ts":"1","s":"negative","id":"x"}', "item.ts"),
        (b'{"key":"k","ts":1.0,"s":"negative"}', "item.id"),
        (b'{"key":"k","ts":1.0,"s":"negative","id":"x","evil":1}', "item.evil"),
    ]:
        result = parse_event(bad)
        assert isinstance(result, str) and error in result, (bad, result)


def test_only_well_formed_states_pass() -> None:
    detector = SpikeDetector(SpikeSettings(window_s=10.0, min_volume=2, warmup_windows=1))
    state = new_state()
    for i in range(200):
        detector.add(state, "k", i * 0.7, ("negative", "neutral")[i % 2], f"i{i}", "1")
    state["partition"] = 1
    restored = StateCodec().loads(StateCodec().dumps(state))
    assert state_error(state) is None and state_error(restored) is None
    assert restored["baseline"], "the case should cover a baseline"
    broken = [
        [1, 2],
        {"open": {}},
        {**new_state(), "open": {"x": {"counts": {}, "samples": {}}}},
        {**new_state(), "max_ts": math.nan},
        {**new_state(), "last": "3"},
        {**new_state(), "baseline": {"negative": {"mean": 0.1, "var": -1.0, "n": 1}}},
        {**new_state(), "history": [{"slot": 1, "counts": {"negative": -2}, "samples": {}}]},
    ]
    for value in broken:
        assert state_error(value) is not None, value


def test_a_changelog_value_that_is_not_json_is_a_state_that_fails() -> None:
    raw = b"\x00garbage{"
    value = StateCodec().loads(raw)
    assert state_error(value) == "changelog value is not JSON"
    assert state_bytes(value) == raw
    assert json.loads(state_bytes({"open": 1})) == {"open": 1}
