"""Input validation: every kind of bad input gets its own reason; good input parses."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from serving.backends.contract import ModelInfo, Prediction, TaskPrediction
from serving.tasks import DEFAULT_TASKS
from streams import messages as m
from streams.kafka.records import labeled_value

ORIGIN = m.Origin("feeds.raw", 2, 17, key=None, timestamp_ms=1)
LIMITS = m.Limits(max_message_bytes=2000, max_text_chars=500, max_json_depth=5)


def parse(value: bytes | None) -> m.FeedItem | m.Rejection:
    return m.parse_record(value, ORIGIN, LIMITS)


def test_json_object_with_all_fields() -> None:
    doc = {"id": "a1", "text": "Markets rally", "source": "wire", "ts": 12.5, "meta": {"k": 1}}
    item = parse(json.dumps(doc).encode())
    assert isinstance(item, m.FeedItem)
    assert (item.id, item.text, item.source, item.ts, item.meta) == (
        "a1",
        "Markets rally",
        "wire",
        12.5,
        {"k": 1},
    )


def test_missing_id_is_derived_from_topic_partition_offset() -> None:
    item = parse(b'{"text": "hello world"}')
    assert isinstance(item, m.FeedItem)
    assert item.id == "feeds.raw-2-17"


def test_integer_id_becomes_a_string() -> None:
    item = parse(b'{"id": 7, "text": "x y"}')
    assert isinstance(item, m.FeedItem) and item.id == "7"


def test_plain_text_is_accepted_verbatim() -> None:
    item = parse("Stocks slide as rates rise 📉".encode())
    assert isinstance(item, m.FeedItem)
    assert item.text == "Stocks slide as rates rise 📉"
    assert item.id == "feeds.raw-2-17"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, m.EMPTY_MESSAGE),
        (b"", m.EMPTY_MESSAGE),
        (b"x" * 2001, m.MESSAGE_TOO_LARGE),
        (b"\xff\xfe\xfa", m.UNDECODABLE_BYTES),
        (b'{"text": "unterminated', m.INVALID_JSON),
        (b"[1, 2, 3]", m.NOT_AN_OBJECT),
        (b'{"a": ' * 6 + b"1" + b"}" * 6, m.JSON_TOO_DEEP),
        (b'{"id": "q"}', m.MISSING_TEXT),
        (b'{"id": "q", "text": null}', m.MISSING_TEXT),
        (b'{"id": "q", "text": 5}', m.TEXT_NOT_STRING),
        (b'{"id": "q", "text": ["a"]}', m.TEXT_NOT_STRING),
        (b'{"id": "q", "text": ""}', m.EMPTY_TEXT),
        (b'{"id": "q", "text": " \\n\\t "}', m.EMPTY_TEXT),
        (b"   \n\t ", m.EMPTY_TEXT),
        (json.dumps({"id": "q", "text": "w" * 501}).encode(), m.TEXT_TOO_LONG),
        (b"w" * 501, m.TEXT_TOO_LONG),
        (b'{"id": {"x": 1}, "text": "ok"}', m.INVALID_FIELD),
        (b'{"id": true, "text": "ok"}', m.INVALID_FIELD),
        (b'{"text": "ok", "source": 3}', m.INVALID_FIELD),
        (b'{"text": "ok", "meta": "str"}', m.INVALID_FIELD),
        (b'{"text": "ok", "ts": {"a": 1}}', m.INVALID_FIELD),
        (b'{"text": "lone \\ud800 surrogate"}', m.INVALID_UNICODE),
        (b'{"text": "ok", "ts": NaN}', m.INVALID_JSON),
        (b'{"text": "ok", "meta": {"x": -Infinity}}', m.INVALID_JSON),
        (json.dumps({"id": "i" * 513, "text": "ok"}).encode(), m.INVALID_FIELD),
        (b'{"text": "ok", "meta": {"k": "\\udfff"}}', m.INVALID_UNICODE),
    ],
)
def test_bad_input_is_rejected_with_its_reason(value: bytes | None, reason: str) -> None:
    result = parse(value)
    assert isinstance(result, m.Rejection), result
    assert result.reason == reason
    assert result.error
    assert result.origin == ORIGIN


def test_error_messages_stay_short_for_huge_fields() -> None:
    result = parse(json.dumps({"id": list(range(300)), "text": "ok"}).encode())
    assert isinstance(result, m.Rejection) and len(result.error) < 200


def test_rejection_keeps_a_valid_input_id() -> None:
    result = parse(b'{"id": "keep-me", "text": ""}')
    assert isinstance(result, m.Rejection) and result.id == "keep-me"


def test_depth_check_ignores_brackets_inside_strings() -> None:
    text = "{[" * 50
    item = parse(json.dumps({"text": text}).encode())
    assert isinstance(item, m.FeedItem) and item.text == text


def test_paired_surrogate_escapes_are_fine() -> None:
    item = parse(b'{"text": "\\ud83d\\ude00 caf\\u00e9"}')
    assert isinstance(item, m.FeedItem) and item.text == "\U0001f600 café"


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON-able value: wrong types, nulls, nesting, emoji, control characters."""
    pool = ["", " ", "x", "naïve 東京 😀", "\x00\x1f ctl", "\u202e rtl", "a" * 600]
    kind = rng.randrange(7 if depth < 6 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 3.5, 10**30])
    if kind in (2, 3):
        return rng.choice(pool)
    if kind == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["id", "text", "source", "ts", "meta", "other"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_fuzzed_input_never_raises_and_valid_items_serialise() -> None:
    rng = random.Random(20261124)
    model = ModelInfo("m", "1", "int8", DEFAULT_TASKS, 128)
    pred = Prediction(
        {t.name: TaskPrediction(t.labels[0], 1.0, {t.labels[0]: 1.0}) for t in DEFAULT_TASKS},
        truncated=False,
    )
    for n in range(3000):
        if n % 3 == 0:
            value = rng.randbytes(rng.randrange(0, 300))
        elif n % 3 == 1:
            value = json.dumps(random_json(rng)).encode()
        else:
            doc = {"id": f"f{n}", "text": random_json(rng), "meta": random_json(rng)}
            value = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
        result = parse(value)
        if isinstance(result, m.FeedItem):
            assert result.text.strip()
            json.loads(labeled_value(result, pred, model, {"consumed": 0.0}, "w"))
        else:
            assert result.reason in m.REASONS and result.error


def test_every_reason_is_listed() -> None:
    assert len(set(m.REASONS)) == len(m.REASONS)


def test_labeled_documents_carry_any_meta_json_can_hold() -> None:
    # orjson writes the output; it refuses integers beyond 64 bits, the fallback keeps them.
    model = ModelInfo("m", "1", "int8", DEFAULT_TASKS, 128)
    pred = Prediction(
        {t.name: TaskPrediction(t.labels[0], 1.0, {t.labels[0]: 1.0}) for t in DEFAULT_TASKS},
        truncated=False,
    )
    meta = {"big": 2**70, "small": -(2**63), "text": "über 🚀", "f": 1e-06, "nested": [[{}]]}
    value = json.dumps({"id": "x", "text": "Markets rally", "meta": meta}).encode()
    item = parse(value)
    assert isinstance(item, m.FeedItem)
    doc = json.loads(labeled_value(item, pred, model, {"consumed": 1.5}, "w"))
    assert doc["meta"] == meta and doc["text"] == "Markets rally"
    assert doc["labels"]["sentiment"]["score"] == 1.0
