"""Output records: the labeled JSON on `feeds.labeled`, and dead letters on `feeds.dlq`."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from serving.backends.contract import ModelInfo, Prediction
from streams.messages import FeedItem, Origin, Rejection

Headers = list[tuple[str, bytes]]
DLQ_HEADER_PREFIX = "feedpulse."


def output_key(item_id: str, origin: Origin) -> bytes:
    """Keep the input's key so per-key order holds downstream; else key by id."""
    return origin.key if origin.key is not None else item_id.encode()


def id_headers(item_id: str) -> Headers:
    """The item id as a header on every output: consumers de-duplicate redeliveries on it
    without parsing the value."""
    return [(DLQ_HEADER_PREFIX + "id", item_id.encode())]


def labeled_value(
    item: FeedItem,
    prediction: Prediction,
    model: ModelInfo,
    timestamps: dict[str, float],
    worker: str,
    *,
    embedding: bool = False,
) -> bytes:
    """The JSON document published for one classified item (with the pooled embedding
    when `embedding`, for the model watch)."""
    doc: dict[str, Any] = {
        "id": item.id,
        "source": item.source,
        "ts": item.ts,
        "text": item.text,
        "truncated": prediction.truncated,
        "labels": {name: p.document() for name, p in prediction.tasks.items()},
        "model": {"name": model.name, "version": model.version, "variant": model.variant},
        "input": {
            "topic": item.origin.topic,
            "partition": item.origin.partition,
            "offset": item.origin.offset,
            "timestamp_ms": item.origin.timestamp_ms,
        },
        "timestamps": {k: round(v, 3) for k, v in timestamps.items()},
        "worker": worker,
    }
    if item.meta is not None:
        doc["meta"] = item.meta
    if embedding and prediction.embedding is not None:
        doc["embedding"] = encode_embedding(prediction.embedding)
    return dump_json(doc)


def dump_json(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON. orjson is several times faster than the standard library on
    the worker's hot path; what it refuses (an integer beyond 64 bits in a passed-through
    `meta`) goes through the standard library, which writes it."""
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def encode_embedding(vector: npt.NDArray[np.float32]) -> str:
    """float16 little-endian bytes, base64: 1 KB for a 384-wide embedding."""
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode()


def decode_embedding(text: str) -> npt.NDArray[np.float32]:
    """The inverse of `encode_embedding`; raises ValueError on malformed input."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"embedding is not base64: {exc}") from None
    if len(raw) % 2:
        raise ValueError("embedding has an odd number of bytes")
    return np.frombuffer(raw, dtype="<f2").astype(np.float32)


def dead_letter_headers(rejection: Rejection, stage: str) -> Headers:
    """Why and where from, as headers; the record value stays the original bytes."""
    o = rejection.origin
    fields = {
        "id": rejection.id,
        "reason": rejection.reason,
        "error": rejection.error,
        "stage": stage,
        "source.topic": o.topic,
        "source.partition": str(o.partition),
        "source.offset": str(o.offset),
    }
    return [(DLQ_HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]


def dead_letter_value(original: bytes | None, max_bytes: int) -> tuple[bytes | None, Headers]:
    """The original bytes as the dead letter's value, cut to `max_bytes` if larger.

    A cut value says so in headers, with the original size, so nothing is silently lost.
    """
    if original is None or len(original) <= max_bytes:
        return original, []
    return original[:max_bytes], [
        (DLQ_HEADER_PREFIX + "original.size", str(len(original)).encode()),
        (DLQ_HEADER_PREFIX + "original.truncated", b"true"),
    ]


def dead_letter_record(
    rejection: Rejection, key: bytes | None, value: bytes | None, stage: str, max_bytes: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the dead letter for a record: the original bytes, the reason.

    Kafka clients refuse a record with neither key nor value, so such a dead letter is keyed
    by its source position (its headers carry that too).
    """
    cut, extra = dead_letter_value(value, max_bytes)
    if key is None and cut is None:
        key = rejection.id.encode()
    return key, cut, [*dead_letter_headers(rejection, stage), *extra]


def decode_headers(headers: Any) -> dict[str, str]:
    """Headers of a consumed record as a str -> str dict (undecodable values repr'd)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        try:
            out[key] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            out[key] = repr(value)
    return out
