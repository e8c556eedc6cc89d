"""Account for published inputs on the output and dead-letter topics (demo, tests, benchmarks).

Inputs are tracked two ways: by id, and by input position (partition, offset), which
every output and dead letter records. Positions account for inputs whose id could not
be read (undecodable bytes, invalid JSON) without knowing the derived id in advance.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers
from streams.kafka.tail import read_topics
from streams.settings import Settings

Position = tuple[int, int]
COMPLETENESS_CHECK_EVERY = 500
Key = Literal["id", "position"]


@dataclass
class Audit:
    """Which ids reached which topic, how often, and how long it took."""

    labeled: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    labeled_at: Counter[Position] = field(default_factory=Counter)
    dead_lettered_at: Counter[Position] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    reasons_at: dict[Position, str] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    first_output_ms: int | None = None
    last_output_ms: int | None = None
    first_consumed_s: float | None = None
    models: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    # Dead letters of other topics (feedback, jobs, decisions): (source topic, reason).
    other_dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)

    def accounted(self, by: Key = "id") -> set[Any]:
        """Ids (or input positions) seen on either topic."""
        if by == "position":
            return set(self.labeled_at) | set(self.dead_lettered_at)
        return set(self.labeled) | set(self.dead_lettered)

    def missing(self, expected: Collection[Any], by: Key = "id") -> set[Any]:
        """Expected ids (or positions) seen on neither topic."""
        return set(expected) - self.accounted(by)

    def duplicates(self) -> int:
        """Extra deliveries beyond the first, on both topics."""
        extra = sum(n - 1 for n in self.labeled.values()) + sum(
            n - 1 for n in self.dead_lettered.values()
        )
        return extra + len(set(self.labeled) & set(self.dead_lettered))

    def add(self, rec: Any, settings: Settings) -> None:
        """Fold one consumed output or dead-letter record in."""
        ts = rec.timestamp
        self.first_output_ms = ts if self.first_output_ms is None else min(self.first_output_ms, ts)
        self.last_output_ms = ts if self.last_output_ms is None else max(self.last_output_ms, ts)
        if rec.topic == settings.dlq_topic:
            headers = decode_headers(rec.headers)
            source = headers.get(DLQ_HEADER_PREFIX + "source.topic", settings.input_topic)
            if source != settings.input_topic:
                reason = headers.get(DLQ_HEADER_PREFIX + "reason", "?")
                self.other_dead_letters[(source, reason)] += 1
                return
            item_id = headers.get(DLQ_HEADER_PREFIX + "id", "?")
            self.dead_lettered[item_id] += 1
            position = (
                int(headers.get(DLQ_HEADER_PREFIX + "source.partition", -1)),
                int(headers.get(DLQ_HEADER_PREFIX + "source.offset", -1)),
            )
            self.dead_lettered_at[position] += 1
            self.reasons[item_id] = self.reasons_at[position] = headers.get(
                DLQ_HEADER_PREFIX + "reason", "?"
            )
            return
        doc = json.loads(rec.value)
        self.labeled[doc["id"]] += 1
        self.labeled_at[(doc["input"]["partition"], doc["input"]["offset"])] += 1
        model = doc["model"]
        self.models[f"{model['name']}/{model['version']} ({model['variant']})"] += 1
        consumed = doc["timestamps"]["consumed"]
        if self.first_consumed_s is None or consumed < self.first_consumed_s:
            self.first_consumed_s = consumed
        published_ms = doc["input"].get("timestamp_ms")
        if published_ms:
            self.latencies_ms.append(max(0.0, float(ts - published_ms)))
        if len(self.samples) < 1000:
            self.samples.append(doc)


async def audit_outputs(
    settings: Settings,
    expected: Collection[Any] | asyncio.Future[Any],
    *,
    by: Key = "id",
    timeout_s: float,
    on_record: Callable[[Audit, Any], None] | None = None,
    settle_s: float = 0.0,
) -> Audit:
    """Read the outputs and dead letters until every expected id (or position) is seen.

    Gives up after `timeout_s`.

    `expected` may be a future (a publish still running): completeness is judged once it
    resolves. `settle_s` keeps reading that long after completeness, to catch late duplicates.
    """
    audit = Audit()
    want: set[Any] | None = None if isinstance(expected, asyncio.Future) else set(expected)
    deadline = time.monotonic() + timeout_s
    complete_at: float | None = None
    topics = [settings.output_topic, settings.dlq_topic]
    unchecked = 0
    async for rec in read_topics(settings, topics, yield_idle=True):
        if rec is not None:
            audit.add(rec, settings)
            unchecked += 1
            if on_record:
                on_record(audit, rec)
        if want is None and isinstance(expected, asyncio.Future) and expected.done():
            want = set(expected.result())
        # Checking costs a pass over everything seen: on idle polls and every
        # COMPLETENESS_CHECK_EVERY records, not per record (quadratic on large audits).
        check = rec is None or unchecked >= COMPLETENESS_CHECK_EVERY
        if complete_at is None and want is not None and check:
            unchecked = 0
            if not audit.missing(want, by):
                complete_at = time.monotonic()
        if complete_at is not None and time.monotonic() - complete_at >= settle_s:
            break
        if time.monotonic() > deadline:
            break
    return audit


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), or None without data."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])
