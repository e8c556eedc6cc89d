"""Account for published ids on the output and dead-letter topics (demo, tests, benchmarks)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from streams.records import DLQ_HEADER_PREFIX, decode_headers
from streams.settings import Settings
from streams.tail import read_topics


@dataclass
class Audit:
    """Which ids reached which topic, how often, and how long it took."""

    labeled: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    first_output_ms: int | None = None
    last_output_ms: int | None = None
    models: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def accounted(self) -> set[str]:
        """Ids seen on either topic."""
        return set(self.labeled) | set(self.dead_lettered)

    def missing(self, expected: Collection[str]) -> set[str]:
        """Expected ids seen on neither topic."""
        return set(expected) - self.accounted()

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
            item_id = headers.get(DLQ_HEADER_PREFIX + "id", "?")
            self.dead_lettered[item_id] += 1
            self.reasons[item_id] = headers.get(DLQ_HEADER_PREFIX + "reason", "?")
            return
        doc = json.loads(rec.value)
        self.labeled[doc["id"]] += 1
        model = doc["model"]
        self.models[f"{model['name']}/{model['version']} ({model['variant']})"] += 1
        published_ms = doc["input"].get("timestamp_ms")
        if published_ms:
            self.latencies_ms.append(max(0.0, float(ts - published_ms)))
        if len(self.samples) < 1000:
            self.samples.append(doc)


async def audit_outputs(
    settings: Settings,
    expected: Collection[str],
    *,
    timeout_s: float,
    on_record: Callable[[Audit, Any], None] | None = None,
    settle_s: float = 0.0,
) -> Audit:
    """Read the output and dead-letter topics until every expected id is seen or time runs out.

    `settle_s` keeps reading that long after completeness, to catch late duplicates.
    """
    audit = Audit()
    want = set(expected)
    deadline = time.monotonic() + timeout_s
    complete_at: float | None = None
    topics = [settings.output_topic, settings.dlq_topic]
    async for rec in read_topics(settings, topics, yield_idle=True):
        if rec is not None:
            audit.add(rec, settings)
            if on_record:
                on_record(audit, rec)
        if complete_at is None and not audit.missing(want):
            complete_at = time.monotonic()
        if complete_at is not None and time.monotonic() - complete_at >= settle_s:
            break
        if time.monotonic() > deadline:
            break
    return audit
