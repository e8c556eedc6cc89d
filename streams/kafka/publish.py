"""Publish a feed file (JSONL, CSV or plain text) to a topic."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import output_max_bytes
from streams.settings import Settings

FeedFormat = Literal["auto", "jsonl", "csv", "text"]
Record = tuple[bytes | None, bytes]
KNOWN_CSV_FIELDS = ("id", "text", "source", "ts")


def detect_format(path: Path) -> str:
    """Pick the format from the file suffix (.jsonl/.ndjson/.json, .csv, anything else: text)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "text"


def _key_of(obj: Any) -> bytes | None:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str | int):
        return str(obj["id"]).encode()
    return None


def read_feed(path: Path, fmt: FeedFormat = "auto") -> Iterator[Record]:
    """Yield (key, value) per item. JSONL lines go out byte for byte (bad ones included:
    the worker dead-letters them with a reason); CSV rows become JSON objects."""
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise ValueError(f"{path}: CSV needs a 'text' column (have {reader.fieldnames})")
            for row in reader:
                # An empty text cell stays: the worker dead-letters it as empty_text.
                obj: dict[str, Any] = {"text": row["text"] or ""}
                obj.update({k: row[k] for k in ("id", "source", "ts") if row.get(k)})
                extra = {k: v for k, v in row.items() if k not in KNOWN_CSV_FIELDS and k and v}
                if extra:
                    obj["meta"] = extra
                yield _key_of(obj), json.dumps(obj, ensure_ascii=False).encode()
        return
    with path.open("rb") as fh:
        for raw_line in fh:
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
            key = None
            if kind == "jsonl":
                try:
                    key = _key_of(json.loads(line))
                except ValueError:
                    key = None
            yield key, line


async def publish(
    settings: Settings,
    records: Iterable[Record],
    *,
    topic: str | None = None,
    rate: float = 0.0,
    on_sent: Callable[[int], None] | None = None,
) -> list[tuple[int, int]]:
    """Send every record and wait for all acknowledgements; `rate` > 0 paces messages/s.

    Returns the (partition, offset) the broker assigned to each record, in order.
    """
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        linger_ms=10,
        max_request_size=output_max_bytes(settings),
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic or settings.input_topic, value=value, key=key))
            sent += 1
            if on_sent:
                on_sent(sent)
            if rate > 0:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        acks = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in acks]
