"""The classify worker against a real broker: nothing lost, right reasons, commits honoured."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams import messages as m
from streams.audit import Audit, audit_outputs
from streams.broker import EmbeddedBroker
from streams.metrics import WorkerMetrics
from streams.publish import Record, publish
from streams.runtime import open_classifier
from streams.settings import Settings
from streams.tail import read_topics
from streams.topics import ensure_topics, pipeline_topics
from streams.worker import ClassifyWorker

pytestmark = pytest.mark.integration

HEADLINES = [
    "Central bank raises interest rates to curb inflation",
    "Striker scores twice as champions win the derby",
    "New smartphone chip promises longer battery life",
    "Peace talks collapse after border clashes",
    "so happy with my new laptop, best purchase this year!",
    "the match got cancelled again, what a waste of a day",
]


def mixed_feed(n_good: int) -> tuple[list[Record], dict[str, str | None]]:
    """Valid JSON, plain text (keyed so the id is predictable) and every bad kind.

    Returns the records and the expected outcome per id: None for labeled, else the reason.
    """
    records: list[Record] = []
    expected: dict[str, str | None] = {}
    for i in range(n_good):
        item_id = f"good-{i}"
        doc = {"id": item_id, "text": HEADLINES[i % len(HEADLINES)], "source": "test"}
        records.append((item_id.encode(), json.dumps(doc).encode()))
        expected[item_id] = None
    long_text = " ".join(["word"] * 400)  # over the 128-token window: truncated, not rejected
    records.append((b"long-1", json.dumps({"id": "long-1", "text": long_text}).encode()))
    expected["long-1"] = None
    bad = {
        "bad-json": (b'{"id": "bad-json", "text": "x"', m.INVALID_JSON),
        "bad-missing": (b'{"id": "bad-missing", "title": "x"}', m.MISSING_TEXT),
        "bad-type": (b'{"id": "bad-type", "text": 12}', m.TEXT_NOT_STRING),
        "bad-empty": (b'{"id": "bad-empty", "text": "  "}', m.EMPTY_TEXT),
        "bad-long": (
            json.dumps({"id": "bad-long", "text": "y" * 30_000}).encode(),
            m.TEXT_TOO_LONG,
        ),
        "bad-array": (b"[1,2]", m.NOT_AN_OBJECT),
    }
    for item_id, (value, reason) in bad.items():
        records.append((item_id.encode(), value))
        expected[item_id] = reason
    return records, expected


async def start_worker(settings: Settings) -> tuple[ClassifyWorker, asyncio.Task[None]]:
    """An in-process worker with its own registry, running until stopped."""
    worker = ClassifyWorker(settings, open_classifier(settings), WorkerMetrics(CollectorRegistry()))
    task = asyncio.create_task(worker.run())
    return worker, task


async def stop_worker(worker: ClassifyWorker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, 30)
    await worker.classifier.close()


async def test_mixed_input_every_id_exactly_once_with_reasons(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker)
    records, expected = mixed_feed(60)
    # Plain text and keyless JSON get ids from their offsets: publish them on their own
    # partition-independent path and account for them by count below.
    plain = [
        (None, b"Plain text: shares of ACME surge after earnings beat"),
        (None, b"\xff\xfe bad bytes"),
    ]
    worker, task = await start_worker(settings)
    try:
        await publish(settings, records + plain)
        audit = await audit_outputs(settings, expected, timeout_s=90, settle_s=2)
    finally:
        await stop_worker(worker, task)

    assert not audit.missing(expected)
    assert audit.duplicates() == 0
    for item_id, reason in expected.items():
        if reason is None:
            assert audit.labeled[item_id] == 1, item_id
            assert item_id not in audit.dead_lettered
        else:
            assert audit.dead_lettered[item_id] == 1, item_id
            assert audit.reasons[item_id] == reason
    derived_labeled = [i for i in audit.labeled if i.startswith(settings.input_topic)]
    derived_dead = [i for i in audit.dead_lettered if i.startswith(settings.input_topic)]
    assert len(derived_labeled) == 1 and len(derived_dead) == 1
    assert audit.reasons[derived_dead[0]] == m.UNDECODABLE_BYTES

    docs = {d["id"]: d for d in audit.samples}
    assert docs["long-1"]["truncated"] is True
    assert docs["good-0"]["truncated"] is False
    good = docs["good-1"]
    assert set(good["labels"]) == {"sentiment", "topic"}
    assert good["model"]["name"] == "feedpulse_classifier"
    assert good["input"]["topic"] == settings.input_topic
    assert abs(sum(good["labels"]["topic"]["scores"].values()) - 1) < 1e-3


async def test_dead_letters_keep_original_bytes_and_source_offsets(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker)
    original = b'{"id": "dl-1", "text": 3.5, "extra": "\xc3\xa9"}'
    worker, task = await start_worker(settings)
    try:
        await publish(settings, [(b"dl-1", original)])
        await audit_outputs(settings, ["dl-1"], timeout_s=60)
    finally:
        await stop_worker(worker, task)
    async for rec in read_topics(settings, [settings.dlq_topic], idle_timeout_s=1):
        headers = dict(rec.headers)
        assert rec.value == original
        assert rec.key == b"dl-1"
        assert headers["feedpulse.reason"] == m.TEXT_NOT_STRING.encode()
        assert headers["feedpulse.stage"] == b"validate"
        assert headers["feedpulse.source.topic"] == settings.input_topic.encode()
        assert int(headers["feedpulse.source.offset"]) >= 0
        break
    else:
        pytest.fail("no dead letter")


async def test_graceful_stop_commits_so_a_restart_relabels_nothing(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker)
    records, expected = mixed_feed(80)
    worker, task = await start_worker(settings)
    try:
        await publish(settings, records)
        first = await audit_outputs(settings, expected, timeout_s=90)
    finally:
        await stop_worker(worker, task)
    assert not first.missing(expected)

    worker, task = await start_worker(settings)
    try:
        await asyncio.wait_for(worker.assigned.wait(), 30)
        await asyncio.sleep(3)  # a worker that ignored the commits would re-label by now
        second = await audit_outputs(settings, expected, timeout_s=10, settle_s=1)
    finally:
        await stop_worker(worker, task)
    assert second.duplicates() == 0
    assert worker.metrics.consumed._value.get() == 0


async def wait_for_output_count(settings: Settings, at_least: int, timeout_s: float) -> Audit:
    """Read outputs until at least `at_least` distinct ids were seen."""
    audit = Audit()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async for rec in read_topics(
        settings, [settings.output_topic, settings.dlq_topic], yield_idle=True
    ):
        if rec is not None:
            audit.add(rec, settings)
        if len(audit.accounted()) >= at_least or loop.time() > deadline:
            break
    return audit


async def test_kill_9_mid_stream_loses_nothing(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(broker, max_batch=16)
    await ensure_topics(settings, pipeline_topics(settings))
    records, expected = mixed_feed(1500)
    victim = process_factory(settings, "worker", log_name="victim")
    await publish(settings, records)
    partial = await wait_for_output_count(settings, 200, timeout_s=90)
    assert 200 <= len(partial.accounted()) < len(expected), "kill must land mid-stream"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    process_factory(settings, "worker", log_name="successor")
    audit = await audit_outputs(settings, expected, timeout_s=180, settle_s=2)
    missing = audit.missing(expected)
    print(f"kill -9 after {len(partial.accounted())} outputs: duplicates={audit.duplicates()}")
    assert not missing, f"{len(missing)} ids lost, e.g. {sorted(missing)[:5]}"


async def test_two_workers_in_one_group_split_partitions(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(broker, max_batch=8)
    await ensure_topics(settings, pipeline_topics(settings))
    process_factory(settings, "worker", log_name="w1")
    process_factory(settings, "worker", log_name="w2")
    await asyncio.sleep(8)  # both join before the stream starts (Tansu joins take ~5 s)
    records, expected = mixed_feed(600)
    await publish(settings, records)
    audit = await audit_outputs(settings, expected, timeout_s=180, settle_s=1)
    assert not audit.missing(expected)
    workers_by_partition: dict[int, set[str]] = {}
    for doc in audit.samples:
        workers_by_partition.setdefault(doc["input"]["partition"], set()).add(doc["worker"])
    workers = set().union(*workers_by_partition.values())
    assert len(workers) == 2, workers_by_partition
