"""Input validation: raw Kafka bytes -> a feed item, or a rejection with a reason."""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Reasons a message goes to the dead-letter topic; stable strings (metrics labels, headers).
EMPTY_MESSAGE = "empty_message"
MESSAGE_TOO_LARGE = "message_too_large"
UNDECODABLE_BYTES = "undecodable_bytes"
INVALID_JSON = "invalid_json"
JSON_TOO_DEEP = "json_too_deep"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
INVALID_FIELD = "invalid_field"
INVALID_UNICODE = "invalid_unicode"
CLASSIFY_FAILED = "classify_failed"
OUTPUT_TOO_LARGE = "output_too_large"
REASONS = (
    EMPTY_MESSAGE,
    MESSAGE_TOO_LARGE,
    UNDECODABLE_BYTES,
    INVALID_JSON,
    JSON_TOO_DEEP,
    NOT_AN_OBJECT,
    MISSING_TEXT,
    TEXT_NOT_STRING,
    EMPTY_TEXT,
    TEXT_TOO_LONG,
    INVALID_FIELD,
    INVALID_UNICODE,
    CLASSIFY_FAILED,
    OUTPUT_TOO_LARGE,
)
MAX_ID_CHARS = 512


@dataclass(frozen=True)
class Limits:
    """Hard input limits, checked before the expensive work."""

    max_message_bytes: int = 1_048_576
    max_text_chars: int = 20_000
    max_json_depth: int = 16


@dataclass(frozen=True)
class Origin:
    """Where a record came from in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None

    @property
    def derived_id(self) -> str:
        """The id of an input that carries none."""
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(frozen=True)
class FeedItem:
    """A valid input, ready to classify."""

    id: str
    text: str
    origin: Origin
    source: str | None = None
    ts: Any = None
    meta: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Rejection:
    """An input that cannot be classified: it goes to the dead-letter topic."""

    id: str
    reason: str
    error: str
    origin: Origin


def json_depth_exceeds(raw: str, limit: int) -> bool:
    """True when brackets nest deeper than `limit` (strings are skipped; no parse needed)."""
    if raw.count("{") + raw.count("[") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth -= 1
    return False


def parse_record(value: bytes | None, origin: Origin, limits: Limits) -> FeedItem | Rejection:
    """Validate one record value.

    A value whose first non-blank character is `{` or `[` must be a JSON object with a
    string `text`; anything else is taken as plain UTF-8 text.
    """

    def reject(reason: str, error: str, item_id: str | None = None) -> Rejection:
        return Rejection(item_id or origin.derived_id, reason, error, origin)

    if not value:
        return reject(EMPTY_MESSAGE, "record has no value")
    if len(value) > limits.max_message_bytes:
        return reject(
            MESSAGE_TOO_LARGE,
            f"{len(value)} bytes exceeds the {limits.max_message_bytes}-byte limit",
        )
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(UNDECODABLE_BYTES, f"not valid UTF-8: {exc}")
    stripped = raw.lstrip()
    if not stripped.startswith(("{", "[")):
        return _item_from_text(raw, origin, limits) or reject(EMPTY_TEXT, "text is empty or blank")
    if json_depth_exceeds(stripped, limits.max_json_depth):
        return reject(JSON_TOO_DEEP, f"JSON nests deeper than {limits.max_json_depth} levels")
    try:
        obj = json.loads(stripped, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        return reject(INVALID_JSON, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return reject(NOT_AN_OBJECT, f"JSON value is a {type(obj).__name__}, expected an object")
    # JSON escapes can smuggle in lone UTF-16 surrogates, which no tokenizer or UTF-8
    # encoder accepts; only documents with escapes need the check.
    if "\\u" in stripped and _has_lone_surrogate(obj):
        return reject(INVALID_UNICODE, "JSON strings hold unpaired UTF-16 surrogate escapes")
    return _item_from_object(obj, origin, limits, reject)


def _finite_float(text: str) -> float:
    # 1e999 parses as inf, which no strict JSON consumer can read back from our outputs.
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(value: Any) -> str:
    """A bounded repr for error messages (inputs can be a megabyte)."""
    return reprlib.repr(value)


def _has_lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _item_from_text(raw: str, origin: Origin, limits: Limits) -> FeedItem | Rejection | None:
    if not raw.strip():
        return None
    if len(raw) > limits.max_text_chars:
        return Rejection(
            origin.derived_id,
            TEXT_TOO_LONG,
            f"text has {len(raw)} characters, limit {limits.max_text_chars}",
            origin,
        )
    return FeedItem(id=origin.derived_id, text=raw, origin=origin)


def _item_from_object(
    obj: dict[str, Any],
    origin: Origin,
    limits: Limits,
    reject: Callable[[str, str, str | None], Rejection],
) -> FeedItem | Rejection:
    item_id = _item_id(obj.get("id"), origin, reject)
    if isinstance(item_id, Rejection):
        return item_id
    if "text" not in obj or obj["text"] is None:
        return reject(MISSING_TEXT, "object has no 'text' field", item_id)
    text = obj["text"]
    if not isinstance(text, str):
        return reject(
            TEXT_NOT_STRING, f"'text' is a {type(text).__name__}, expected a string", item_id
        )
    if not text.strip():
        return reject(EMPTY_TEXT, "text is empty or blank", item_id)
    if len(text) > limits.max_text_chars:
        return reject(
            TEXT_TOO_LONG,
            f"text has {len(text)} characters, limit {limits.max_text_chars}",
            item_id,
        )
    source, meta, ts = obj.get("source"), obj.get("meta"), obj.get("ts")
    error = _optional_field_error(source, meta, ts)
    if error is not None:
        return reject(INVALID_FIELD, error, item_id)
    return FeedItem(id=item_id, text=text, origin=origin, source=source, ts=ts, meta=meta)


def _item_id(
    raw_id: Any, origin: Origin, reject: Callable[[str, str, str | None], Rejection]
) -> str | Rejection:
    if raw_id is None:
        return origin.derived_id
    if isinstance(raw_id, str) and raw_id.strip():
        if len(raw_id) > MAX_ID_CHARS:
            return reject(
                INVALID_FIELD, f"'id' has {len(raw_id)} characters, limit {MAX_ID_CHARS}", None
            )
        return raw_id
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        item_id = str(raw_id)
        if len(item_id) > MAX_ID_CHARS:
            return reject(
                INVALID_FIELD, f"'id' has {len(item_id)} digits, limit {MAX_ID_CHARS}", None
            )
        return item_id
    return reject(
        INVALID_FIELD,
        f"'id' must be a non-empty string or an integer, got {_short(raw_id)}",
        None,
    )


def _optional_field_error(source: Any, meta: Any, ts: Any) -> str | None:
    if source is not None and not isinstance(source, str):
        return f"'source' must be a string, got {type(source).__name__}"
    if meta is not None and not isinstance(meta, dict):
        return f"'meta' must be an object, got {type(meta).__name__}"
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, str | int | float)):
        return f"'ts' must be a string or a number, got {_short(ts)}"
    return None
