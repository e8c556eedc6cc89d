"""Hostile input: fuzzed validation never raises, and a real worker accounts for every message.

The property tests drive `parse_record` with hypothesis (fixed profile: derandomized, bounded
examples, no deadline). The integration test publishes a seeded hostile feed to a real broker,
runs a real worker process, and checks that every message ends on the output or dead-letter
topic, with a listed reason and its original bytes, and that the worker survives it.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from serving.backends.contract import ModelInfo, Prediction, TaskPrediction
from serving.tasks import DEFAULT_TASKS
from streams import messages as m
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import Record, publish
from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers, labeled_value
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import Audit, audit_outputs
from tests.streams.classify.hostile_inputs import (
    CONTROL_CHARS,
    INVALID_UTF8,
    LONE_SURROGATES,
    SCRIPTS,
    expanding_output,
    hostile_feed,
)

ORIGIN = m.Origin("feeds.raw", 3, 41, key=b"k", timestamp_ms=1)
SMALL = m.Limits(max_message_bytes=2_000, max_text_chars=300, max_json_depth=4)
TIGHT = m.Limits(max_message_bytes=64, max_text_chars=8, max_json_depth=1)
DEFAULT = m.Limits()
# Reasons validation may give; the others belong to later stages.
VALIDATE_REASONS = set(m.REASONS) - {m.CLASSIFY_FAILED, m.OUTPUT_TOO_LARGE}
MODEL = ModelInfo("m", "1", "int8", DEFAULT_TASKS, 128)
PREDICTION = Prediction(
    {t.name: TaskPrediction(t.labels[0], 1.0, {t.labels[0]: 1.0}) for t in DEFAULT_TASKS},
    truncated=False,
)
SEED = 20250501

# Fixed, fast and reproducible: the same examples on every run, a few seconds in all.
HOSTILE = settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------

hostile_chars = st.characters(codec=None, exclude_categories=()) | st.sampled_from(
    [*CONTROL_CHARS, "\ufeff", "\u200b", "\u202e", "\u200d", "📈", "\U0010ffff"]
)
hostile_text = st.text(hostile_chars, max_size=40) | st.sampled_from(SCRIPTS)
# Strings up to and past every limit, built cheaply from a repeated chunk.
big_text = st.builds(lambda chunk, n: chunk * n, hostile_text.filter(bool), st.integers(1, 3_000))
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**600), max_value=10**600)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text
    | big_text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=25,
)
# A document: each known field absent, of its right type, or anything at all; stray keys.
right_types: dict[str, st.SearchStrategy[Any]] = {
    "id": hostile_text | st.integers(),
    "text": hostile_text | big_text,
    "source": hostile_text,
    "meta": st.dictionaries(hostile_text, json_value, max_size=3),
    "ts": hostile_text | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
}
documents = st.fixed_dictionaries(
    {}, optional={name: right | right | json_value for name, right in right_types.items()}
).flatmap(lambda d: st.dictionaries(hostile_text, json_value, max_size=2).map(lambda x: x | d))
# Raw tokens that json.dumps never writes.
raw_tokens = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" * 5_000, "[", "]", "{", "}", ",", ":"]
)


@st.composite
def json_bytes(draw: st.DrawFn) -> bytes:
    """A serialised document, then maybe damaged: cut, spliced, re-nested, re-encoded."""
    top = draw(documents | json_value)
    raw = json.dumps(top, ensure_ascii=draw(st.booleans()))
    mutation = draw(st.integers(0, 7))
    if mutation == 1:  # a lone surrogate escape inside the first string
        quote = raw.find('"')
        if quote >= 0:
            raw = raw[: quote + 1] + draw(st.sampled_from(LONE_SURROGATES)) + raw[quote + 1 :]
    elif mutation == 2:  # nested deeper than the limit (or just about)
        depth = draw(st.integers(0, 40) | st.sampled_from([2_000, 100_000]))
        raw = '{"text": "x", "meta": ' + "[" * depth + raw + "]" * depth + "}"
    elif mutation == 3:  # cut anywhere
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mutation == 4:  # a raw token spliced in anywhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(raw_tokens) + raw[at:]
    elif mutation == 5:  # leading blanks (some only Python calls blank), trailing junk
        raw = draw(st.sampled_from([" ", "\n\t", "\x0b\x1c", "\u00a0", "\ufeff"])) + raw
        raw += draw(st.sampled_from(["", " ", "\x00", "}", "\u2028"]))
    encoded = raw.encode("utf-8", "surrogatepass")  # lone surrogates as raw UTF-8 bytes
    if mutation == 6:  # invalid UTF-8 spliced in
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + draw(st.sampled_from(INVALID_UTF8)) + encoded[at:]
    elif mutation == 7:
        encoded = raw.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1"])), "replace")
    return encoded


hostile_bytes = (
    st.binary(max_size=600)
    | st.text(hostile_chars, max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))
    | big_text.map(lambda s: s.encode("utf-8", "surrogatepass"))
    | json_bytes()
    | st.sampled_from([b"", b" ", b"{}", b"[]", b"null", b'""', b"\xef\xbb\xbf"])
)
any_limits = st.sampled_from([SMALL, TIGHT, DEFAULT])


# -- properties ---------------------------------------------------------------------------


def check_outcome(value: bytes | None, limits: m.Limits) -> m.FeedItem | m.Rejection:
    """Parse, and check what every outcome must satisfy whatever the input."""
    result = m.parse_record(value, ORIGIN, limits)
    assert isinstance(result, m.FeedItem | m.Rejection)
    assert result.origin == ORIGIN
    if currently_in_test_context():  # outcome counts for --hypothesis-show-statistics
        event(result.reason if isinstance(result, m.Rejection) else "accepted")
    assert isinstance(result.id, str) and result.id
    if isinstance(result, m.Rejection):
        assert result.reason in VALIDATE_REASONS, result
        assert isinstance(result.error, str) and result.error
        # the id and the error go out as UTF-8 headers
        (result.id + result.error).encode("utf-8")
        return result
    assert value is not None and len(value) <= limits.max_message_bytes
    assert isinstance(result.text, str) and result.text.strip()
    assert len(result.text) <= limits.max_text_chars
    assert result.source is None or isinstance(result.source, str)
    assert result.meta is None or isinstance(result.meta, dict)
    assert result.ts is None or isinstance(result.ts, str | int | float)
    assert not isinstance(result.ts, bool)
    # what the worker publishes for it must serialise (it is built outside any try)
    json.loads(labeled_value(result, PREDICTION, MODEL, {"consumed": 0.0}, "w"))
    return result


@HOSTILE
@given(value=hostile_bytes, limits=any_limits)
def test_parse_record_never_raises_on_arbitrary_bytes(value: bytes, limits: m.Limits) -> None:
    check_outcome(value, limits)


@HOSTILE
@given(doc=documents, ensure_ascii=st.booleans(), limits=st.sampled_from([SMALL, DEFAULT]))
def test_documents_with_wrong_types_get_the_right_reasons(
    doc: dict[str, Any], ensure_ascii: bool, limits: m.Limits
) -> None:
    value = json.dumps(doc, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    result = check_outcome(value, limits)
    if isinstance(result, m.FeedItem):
        assert result.text == doc["text"]
        assert result.meta == doc.get("meta") and result.source == doc.get("source")
        return
    if result.reason in (m.MESSAGE_TOO_LARGE, m.JSON_TOO_DEEP, m.INVALID_UNICODE):
        return  # checked before the fields
    if result.reason == m.UNDECODABLE_BYTES:  # lone surrogates written raw by ensure_ascii=False
        assert not ensure_ascii
        return
    text = doc.get("text")
    expected = {
        m.MISSING_TEXT: text is None,
        m.TEXT_NOT_STRING: text is not None and not isinstance(text, str),
        m.EMPTY_TEXT: isinstance(text, str) and not text.strip(),
        m.TEXT_TOO_LONG: isinstance(text, str) and len(text) > limits.max_text_chars,
        m.INVALID_FIELD: True,  # some other field of the wrong type
    }
    assert expected.get(result.reason), (result, doc)


@HOSTILE
@given(value=hostile_bytes, limits=any_limits)
def test_checks_come_in_order_size_then_utf8(value: bytes, limits: m.Limits) -> None:
    result = check_outcome(value, limits)
    if not value:
        assert isinstance(result, m.Rejection) and result.reason == m.EMPTY_MESSAGE
    elif len(value) > limits.max_message_bytes:
        assert isinstance(result, m.Rejection) and result.reason == m.MESSAGE_TOO_LARGE
    else:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            assert isinstance(result, m.Rejection) and result.reason == m.UNDECODABLE_BYTES


@pytest.mark.parametrize("limits", [SMALL, DEFAULT], ids=["small", "default"])
def test_seeded_hostile_feed_never_raises(limits: m.Limits) -> None:
    for _kind, _key, value in hostile_feed(300, SEED, limits):
        check_outcome(value, limits)


@pytest.mark.parametrize(
    "value",
    [
        b'{"text": "x", "ts": 1e999}',
        b'{"text": "x", "meta": {"n": -1e400}}',
    ],
)
def test_numbers_beyond_float_range_are_rejected_not_published_as_infinity(value: bytes) -> None:
    result = m.parse_record(value, ORIGIN, DEFAULT)
    assert isinstance(result, m.Rejection), result
    assert result.reason == m.INVALID_JSON and "out of range" in result.error


def test_an_integer_id_longer_than_the_id_limit_is_rejected() -> None:
    doc = b'{"id": ' + b"7" * (m.MAX_ID_CHARS + 1) + b', "text": "x"}'
    result = m.parse_record(doc, ORIGIN, DEFAULT)
    assert isinstance(result, m.Rejection) and result.reason == m.INVALID_FIELD


# -- against a real broker and worker -----------------------------------------------------


class DeadLetters:
    """The value and headers of every dead letter, by input position (an `on_record` hook)."""

    def __init__(self, settings: Settings) -> None:
        self.dlq_topic = settings.dlq_topic
        self.at: dict[tuple[int, int], list[tuple[bytes | None, dict[str, str]]]] = {}

    def __call__(self, _audit: Audit, rec: Any) -> None:
        if rec.topic != self.dlq_topic:
            return
        headers = decode_headers(rec.headers)
        position = (
            int(headers[DLQ_HEADER_PREFIX + "source.partition"]),
            int(headers[DLQ_HEADER_PREFIX + "source.offset"]),
        )
        self.at.setdefault(position, []).append((rec.value, headers))


def keeps_original(
    value: bytes | None, headers: dict[str, str], original: bytes | None, max_bytes: int
) -> bool:
    """The original bytes, or (for an oversized original) its first `max_bytes` and its size."""
    if not original:
        return not value  # a tombstone or an empty value stays empty
    if len(original) <= max_bytes:
        return value == original and DLQ_HEADER_PREFIX + "original.size" not in headers
    return (
        value == original[:max_bytes]
        and headers.get(DLQ_HEADER_PREFIX + "original.size") == str(len(original))
        and headers.get(DLQ_HEADER_PREFIX + "original.truncated") == "true"
    )


@pytest.mark.integration
async def test_worker_survives_a_hostile_feed_and_accounts_for_every_message(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(broker)
    limits = m.Limits(settings.max_message_bytes, settings.max_text_chars, settings.max_json_depth)
    feed = [(kind, key, value) for kind, key, value in hostile_feed(300, SEED, limits)]
    # What validation says about each (the properties above vouch for it); key-free origin.
    expected = [m.parse_record(value, ORIGIN, limits) for _, _, value in feed]
    await ensure_topics(settings, pipeline_topics(settings))
    worker = process_factory(settings, "worker", log_name="worker")
    # publish's Record type has no tombstones (None values), but they are sent as they are
    records = cast(list[Record], [(key, value) for _, key, value in feed])
    positions = await publish(settings, records)
    dead = DeadLetters(settings)
    audit = await audit_outputs(
        settings, positions, by="position", timeout_s=60, on_record=dead, settle_s=1
    )

    missing = audit.missing(positions, "position")
    assert not missing, f"{len(missing)} lost: {[feed[positions.index(p)][0] for p in missing]}"
    assert worker.poll() is None, "the worker died"
    problems: list[str] = []
    for (kind, _key, value), pos, parsed in zip(feed, positions, expected, strict=True):
        where = f"{kind} at {pos} ({(value or b'')[:60]!r})"
        letters = dead.at.get(pos, [])
        if isinstance(parsed, m.Rejection):
            if audit.labeled_at[pos] or not letters:
                problems.append(f"{where}: expected a dead letter ({parsed.reason})")
        elif not audit.labeled_at[pos] and not letters:
            problems.append(f"{where}: valid, yet neither labeled nor dead-lettered")
        for got, headers in letters:
            reason = headers.get(DLQ_HEADER_PREFIX + "reason")
            if reason not in m.REASONS:
                problems.append(f"{where}: dead letter without a listed reason: {reason!r}")
            elif isinstance(parsed, m.Rejection) and reason != parsed.reason:
                problems.append(f"{where}: reason {reason}, validation says {parsed.reason}")
            elif reason == m.OUTPUT_TOO_LARGE:
                continue  # its value: see the next test
            if not keeps_original(got, headers, value, settings.max_message_bytes):
                problems.append(f"{where}: dead letter lost the original bytes ({reason})")
    assert not problems, "\n".join(problems)
    redelivered = sum(audit.labeled_at[p] + len(dead.at.get(p, [])) - 1 for p in positions)
    print(
        f"hostile feed: {len(feed)} messages, {len(audit.labeled_at)} labeled, dead letters "
        f"{sorted(Counter(audit.reasons_at.values()).items())}, redelivered {redelivered}"
    )

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, "the worker did not stop cleanly"


@pytest.mark.integration
async def test_output_too_large_dead_letter_keeps_the_original_bytes(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(broker)
    original = expanding_output(settings.max_message_bytes)
    assert len(original) <= settings.max_message_bytes
    await ensure_topics(settings, pipeline_topics(settings))
    worker = process_factory(settings, "worker", log_name="worker")
    positions = await publish(settings, [(b"exp", original)])
    dead = DeadLetters(settings)
    audit = await audit_outputs(settings, positions, by="position", timeout_s=45, on_record=dead)
    assert not audit.missing(positions, "position")
    assert worker.poll() is None
    ((value, headers),) = dead.at[positions[0]]
    assert headers[DLQ_HEADER_PREFIX + "reason"] == m.OUTPUT_TOO_LARGE
    assert keeps_original(value, headers, original, settings.max_message_bytes)
