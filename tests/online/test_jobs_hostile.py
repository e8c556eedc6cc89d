"""Jobs and decisions are untrusted input: any record decodes or is a ValueError with a
short reason, never another exception; valid records survive the wire unchanged."""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online.jobs import MAX_REASON_CHARS, Decision, FineTuneJob, gunzip

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
nonempty = st.text(min_size=1, max_size=30)
# A row's answer: a label, or a multi-label task's set of labels (a tuple, maybe empty).
answers = nonempty | st.lists(nonempty, max_size=3).map(tuple)
rows = st.dictionaries(nonempty, st.lists(st.tuples(nonempty, answers), max_size=5), max_size=3)
reasons = st.lists(st.dictionaries(st.text(max_size=8), scalars, max_size=3), max_size=3)
finite = st.floats(allow_nan=False, allow_infinity=False)
jobs = st.builds(
    FineTuneJob,
    model=st.text(max_size=20),
    base_version=st.integers(0, 10**6),
    rows=rows,
    reasons=reasons,
    id=st.text(min_size=1, max_size=512),
    created_at=finite,
    rows_dropped_for_size=st.dictionaries(nonempty, st.integers(0, 10**6), max_size=2),
)
decisions = st.builds(
    Decision,
    job_id=st.text(min_size=1, max_size=64),
    model=st.text(max_size=20),
    action=st.sampled_from(["promoted", "rejected", "skipped", "failed", "rolled_back"]),
    reason=st.text(max_size=100),
    base_version=st.integers(0, 10**6),
    candidate_version=st.none() | st.integers(0, 10**6),
    figures=st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    decided_at=finite,
)


def decodes_or_value_error(decode: Any, value: Any) -> object | None:
    """The decoded record, or None after a ValueError with a short reason."""
    try:
        return decode(value)
    except ValueError as exc:
        assert 0 < len(str(exc)) <= MAX_REASON_CHARS
        return None


def with_field(record: bytes, key: str, value: Any) -> bytes:
    doc = json.loads(record)
    doc[key] = value
    return json.dumps(doc).encode()


def with_rows(record: bytes, packed: bytes) -> bytes:
    return with_field(record, "rows_gzip_b64", base64.b64encode(packed).decode())


def packed_rows(record: bytes) -> bytes:
    return base64.b64decode(json.loads(record)["rows_gzip_b64"])


@FUZZ
@given(st.binary(max_size=2000) | st.none())
def test_arbitrary_bytes_never_crash_the_decoders(value: bytes | None) -> None:
    decodes_or_value_error(FineTuneJob.decode, value)
    decodes_or_value_error(Decision.decode, value)


@FUZZ
@given(json_values)
def test_arbitrary_json_never_crashes_the_decoders(value: Any) -> None:
    encoded = json.dumps(value).encode()
    decodes_or_value_error(FineTuneJob.decode, encoded)
    decodes_or_value_error(Decision.decode, encoded)


@FUZZ
@given(jobs)
def test_a_valid_job_survives_the_wire(job: FineTuneJob) -> None:
    assert FineTuneJob.decode(job.encode()) == job


@FUZZ
@given(decisions)
def test_a_valid_decision_survives_the_wire(decision: Decision) -> None:
    assert Decision.decode(decision.encode()) == decision


@FUZZ
@given(jobs, st.data())
def test_a_mutated_job_decodes_or_is_a_value_error(job: FineTuneJob, data: st.DataObject) -> None:
    record = job.encode()
    packed = packed_rows(record)
    cut = data.draw(st.integers(0, len(record)))
    at = data.draw(st.integers(0, len(record) - 1))
    flipped = bytearray(record)
    flipped[at] ^= data.draw(st.integers(1, 255))
    key = data.draw(st.sampled_from(["id", "model", "base_version", "created_at", "reasons"]))
    mutants = [
        record[:cut],
        bytes(flipped),
        with_field(record, key, data.draw(json_values)),
        with_field(record, "rows_gzip_b64", data.draw(json_values)),
        with_rows(record, packed[: data.draw(st.integers(0, len(packed) - 1))]),
        with_rows(record, gzip.compress(json.dumps(data.draw(json_values)).encode())),
        with_rows(record, data.draw(st.binary(max_size=200))),
    ]
    flipped_packed = bytearray(packed)
    flipped_packed[data.draw(st.integers(0, len(packed) - 1))] ^= 0xFF
    mutants.append(with_rows(record, bytes(flipped_packed)))
    for mutant in mutants:
        decoded = decodes_or_value_error(FineTuneJob.decode, mutant)
        assert decoded is None or isinstance(decoded, FineTuneJob)


@FUZZ
@given(decisions, st.data())
def test_a_mutated_decision_decodes_or_is_a_value_error(
    decision: Decision, data: st.DataObject
) -> None:
    record = decision.encode()
    key = data.draw(st.sampled_from(list(json.loads(record))))
    flipped = bytearray(record)
    flipped[data.draw(st.integers(0, len(record) - 1))] ^= data.draw(st.integers(1, 255))
    for mutant in (
        record[: data.draw(st.integers(0, len(record)))],
        bytes(flipped),
        with_field(record, key, data.draw(json_values)),
    ):
        decoded = decodes_or_value_error(Decision.decode, mutant)
        assert decoded is None or isinstance(decoded, Decision)


def a_job() -> FineTuneJob:
    return FineTuneJob("m", 3, {"sentiment": [("text", "neutral")] * 10}, [{"detector": "x"}])


def test_a_truncated_gzip_payload_is_a_value_error() -> None:
    record = a_job().encode()
    packed = packed_rows(record)
    with pytest.raises(ValueError, match="truncated gzip"):
        FineTuneJob.decode(with_rows(record, packed[:-9]))


@pytest.mark.parametrize(
    ("rows", "where"),
    [
        ([["text", "neutral"]], "rows: Input should be an object"),
        ({"sentiment": {"text": "neutral"}}, "rows.sentiment"),
        ({"sentiment": [["text"]]}, "rows.sentiment.0"),
        ({"sentiment": [["text", 3]]}, "rows.sentiment.0.1"),
        ({"sentiment": [["", "neutral"]]}, "rows.sentiment.0.0"),
        ({"tags": [["text", ["bug", 3]]]}, "rows.tags.0.1"),
        ({"tags": [["text", ["bug", ""]]]}, "rows.tags.0.1"),
    ],
)
def test_rows_of_the_wrong_shape_are_a_value_error(rows: Any, where: str) -> None:
    record = with_rows(a_job().encode(), gzip.compress(json.dumps(rows).encode()))
    with pytest.raises(ValueError, match="not a fine-tuning job") as info:
        FineTuneJob.decode(record)
    assert where in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", ""),
        ("id", "x" * 513),
        ("base_version", -1),
        ("base_version", "3"),
        ("base_version", True),
        ("created_at", "now"),
        ("reasons", [1]),
        ("rows_gzip_b64", "%%%"),
        ("rows_gzip_b64", "é"),
    ],
)
def test_fields_of_the_wrong_type_are_a_value_error(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match="not a fine-tuning job"):
        FineTuneJob.decode(with_field(a_job().encode(), key, value))


def test_an_infinite_timestamp_is_a_value_error() -> None:
    record = a_job().encode().replace(b'"created_at":', b'"created_at":Infinity,"x":')
    with pytest.raises(ValueError, match="created_at"):
        FineTuneJob.decode(record)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MB of zeros, gzip-compressed to about 200 KB."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(deflate.compress(chunk) for _ in range(200)) + deflate.flush()


def test_a_gzip_bomb_is_rejected_quickly_with_a_clear_reason(bomb: bytes) -> None:
    record = with_rows(a_job().encode(), bomb)
    started = time.monotonic()
    with pytest.raises(ValueError, match="decompress to more than 67108864 bytes"):
        FineTuneJob.decode(record)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="more than 1000 bytes"):
        gunzip(bomb, 1000)


def test_trailing_bytes_after_the_gzip_payload_are_a_value_error() -> None:
    record = a_job().encode()
    with pytest.raises(ValueError, match="after the end"):
        FineTuneJob.decode(with_rows(record, packed_rows(record) + b"junk"))


def test_records_written_before_rows_dropped_for_size_still_decode() -> None:
    old = {
        "id": "abc",
        "model": "m",
        "base_version": 2,
        "reasons": [],
        "created_at": 1.5,
        "row_counts": {"sentiment": 1},
        "rows_gzip_b64": base64.b64encode(
            gzip.compress(b'{"sentiment": [["t", "neutral"]]}')
        ).decode(),
        "unknown": "ignored",
    }
    job = FineTuneJob.decode(json.dumps(old).encode())
    assert job.rows == {"sentiment": [("t", "neutral")]} and job.rows_dropped_for_size == {}


@pytest.mark.parametrize(
    "value",
    [
        b'{"job_id": "j"}',
        b'{"job_id": "j", "model": "m", "action": "won", "reason": "", "base_version": 1}',
        b'{"job_id": "j", "model": "m", "action": "failed", "reason": "", "base_version": 1.5}',
        b'{"job_id": "", "model": "m", "action": "failed", "reason": "", "base_version": 1}',
        b"[]",
        b"\xff",
    ],
)
def test_a_malformed_decision_is_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a fine-tuning decision"):
        Decision.decode(value)


def test_a_decision_without_optional_fields_decodes() -> None:
    value = b'{"job_id": "j", "model": "m", "action": "failed", "reason": "", "base_version": 1}'
    decision = Decision.decode(value)
    assert decision.candidate_version is None and decision.figures == {}
