"""The audit that the demo, tests and benchmarks trust to say nothing was lost."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from streams.kafka.records import DLQ_HEADER_PREFIX
from streams.settings import Settings
from streams.testing.audit import Audit, percentile

SETTINGS = Settings()


def labeled(item_id: str, partition: int, offset: int, ts: int = 2_000) -> Any:
    doc = {
        "id": item_id,
        "input": {"partition": partition, "offset": offset, "timestamp_ms": 1_000},
        "model": {"name": "m", "version": "1", "variant": "int8"},
        "timestamps": {"consumed": 1.5},
    }
    return SimpleNamespace(topic=SETTINGS.output_topic, timestamp=ts, value=json.dumps(doc))


def dead_letter(item_id: str, partition: int, offset: int, reason: str) -> Any:
    headers = [
        (DLQ_HEADER_PREFIX + "id", item_id.encode()),
        (DLQ_HEADER_PREFIX + "source.partition", str(partition).encode()),
        (DLQ_HEADER_PREFIX + "source.offset", str(offset).encode()),
        (DLQ_HEADER_PREFIX + "reason", reason.encode()),
    ]
    return SimpleNamespace(topic=SETTINGS.dlq_topic, timestamp=3_000, headers=headers, value=b"")


def test_an_input_is_accounted_for_on_either_topic_by_id_or_position() -> None:
    audit = Audit()
    audit.add(labeled("a", 0, 7), SETTINGS)
    audit.add(dead_letter("b", 1, 3, "invalid_json"), SETTINGS)
    assert audit.missing({"a", "b", "c"}) == {"c"}
    assert audit.missing({(0, 7), (1, 3), (1, 4)}, by="position") == {(1, 4)}
    assert audit.reasons == {"b": "invalid_json"}
    assert audit.latencies_ms == [1000.0]
    assert (audit.first_output_ms, audit.last_output_ms) == (2_000, 3_000)
    assert audit.models == {"m/1 (int8)": 1}


def test_duplicates_count_redeliveries_and_inputs_on_both_topics() -> None:
    audit = Audit()
    audit.add(labeled("a", 0, 7), SETTINGS)
    assert audit.duplicates() == 0
    audit.add(labeled("a", 0, 7), SETTINGS)
    audit.add(dead_letter("a", 0, 7, "classify_failed"), SETTINGS)
    assert audit.duplicates() == 2


def test_percentile_of_nothing_is_none_and_of_one_value_that_value() -> None:
    assert percentile([], 99) is None
    assert percentile([4.0], 50) == 4.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 99) > percentile(values, 50)  # type: ignore[operator]
