"""The classify worker against a real broker: nothing lost, right reasons, commits honoured."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams import messages as m
from streams.classify.backend import open_classifier
from streams.classify.delivery import Delivery
from streams.classify.producer import TransactionsUnsupportedError
from streams.classify.worker import ClassifyWorker
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import Record, publish
from streams.kafka.records import decode_headers
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.testing.audit import Audit, audit_outputs

pytestmark = pytest.mark.integration

HEADLINES = [
    "Central bank raises interest rates to curb inflation",
    "Striker scores twice as champions win the derby",
    "New smartphone chip promises longer battery life",
    "Peace talks collapse after border clashes",
    "so happy with my new laptop, best purchase this year!",
    "the match got cancelled again, what a waste of a day",
]


def mixed_feed(n_good: int) -> tuple[list[Record], list[str | None]]:
    """Valid JSON, plain text, a text over the model window and every bad kind of input.

    Returns the records and, aligned with them, the expected outcome: None for labeled,
    else the dead-letter reason.
    """
    records: list[Record] = []
    outcomes: list[str | None] = []
    for i in range(n_good):
        item_id = f"good-{i}"
        doc = {"id": item_id, "text": HEADLINES[i % len(HEADLINES)], "source": "test"}
        records.append((item_id.encode(), json.dumps(doc).encode()))
        outcomes.append(None)
    long_text = " ".join(["word"] * 400)  # over the 128-token window: truncated, not rejected
    extra: list[tuple[bytes | None, bytes, str | None]] = [
        (b"long-1", json.dumps({"id": "long-1", "text": long_text}).encode(), None),
        (None, b"Plain text: shares of ACME surge after earnings beat", None),
        (None, b'{"text": "keyless JSON without an id"}', None),
        (None, b"\xff\xfe bad bytes", m.UNDECODABLE_BYTES),
        (b"bad-json", b'{"id": "bad-json", "text": "x"', m.INVALID_JSON),
        (b"bad-array", b"[1,2]", m.NOT_AN_OBJECT),
        (b"bad-missing", b'{"id": "bad-missing", "title": "x"}', m.MISSING_TEXT),
        (b"bad-type", b'{"id": "bad-type", "text": 12}', m.TEXT_NOT_STRING),
        (b"bad-empty", b'{"id": "bad-empty", "text": "  "}', m.EMPTY_TEXT),
        (
            b"bad-long",
            json.dumps({"id": "bad-long", "text": "y" * 30_000}).encode(),
            m.TEXT_TOO_LONG,
        ),
        (b"bad-null", b"", m.EMPTY_MESSAGE),
        (b"bad-unicode", b'{"id": "bad-unicode", "text": "\\ud800 x"}', m.INVALID_UNICODE),
    ]
    for key, value, reason in extra:
        records.append((key, value))
        outcomes.append(reason)
    return records, outcomes


async def start_worker(settings: Settings) -> tuple[ClassifyWorker, asyncio.Task[None]]:
    """An in-process worker with its own registry, running until stopped."""
    worker = ClassifyWorker(settings, open_classifier(settings), WorkerMetrics(CollectorRegistry()))
    task = asyncio.create_task(worker.run())
    return worker, task


async def stop_worker(worker: ClassifyWorker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, 30)
    await worker.classifier.close()


async def test_mixed_input_every_input_exactly_once_with_reasons(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker)
    records, outcomes = mixed_feed(60)
    worker, task = await start_worker(settings)
    try:
        positions = await publish(settings, records)
        audit = await audit_outputs(settings, positions, by="position", timeout_s=90, settle_s=2)
    finally:
        await stop_worker(worker, task)

    assert not audit.missing(positions, "position")
    assert audit.duplicates() == 0
    for pos, reason in zip(positions, outcomes, strict=True):
        if reason is None:
            assert audit.labeled_at[pos] == 1, pos
            assert pos not in audit.dead_lettered_at
        else:
            assert audit.dead_lettered_at[pos] == 1, pos
            assert audit.reasons_at[pos] == reason
    assert audit.reasons["bad-type"] == m.TEXT_NOT_STRING  # a readable id is kept
    docs = {(d["input"]["partition"], d["input"]["offset"]): d for d in audit.samples}
    keyless = docs[positions[records.index((None, b'{"text": "keyless JSON without an id"}'))]]
    assert (
        keyless["id"]
        == f"{settings.input_topic}-{keyless['input']['partition']}-{keyless['input']['offset']}"
    )
    by_id = {d["id"]: d for d in audit.samples}
    assert by_id["long-1"]["truncated"] is True
    assert by_id["good-0"]["truncated"] is False
    good = by_id["good-1"]
    assert set(good["labels"]) == {"sentiment", "topic"}
    assert good["model"]["name"] == "feedpulse_classifier"
    assert good["input"]["topic"] == settings.input_topic
    assert abs(sum(good["labels"]["topic"]["scores"].values()) - 1) < 1e-3
    assert worker.metrics.dead_lettered.labels(m.TEXT_TOO_LONG)._value.get() == 1


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
    records, _ = mixed_feed(80)
    worker, task = await start_worker(settings)
    try:
        positions = await publish(settings, records)
        first = await audit_outputs(settings, positions, by="position", timeout_s=90)
    finally:
        await stop_worker(worker, task)
    assert not first.missing(positions, "position")

    worker, task = await start_worker(settings)
    try:
        await asyncio.wait_for(worker.assigned.wait(), 30)
        await asyncio.sleep(3)  # a worker that ignored the commits would re-label by now
        second = await audit_outputs(settings, positions, by="position", timeout_s=10, settle_s=1)
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
        if len(audit.accounted("position")) >= at_least or loop.time() > deadline:
            break
    return audit


async def test_kill_9_mid_stream_loses_nothing(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(broker, max_batch=16)
    await ensure_topics(settings, pipeline_topics(settings))
    records, _ = mixed_feed(1500)
    victim = process_factory(settings, "worker", log_name="victim")
    positions = await publish(settings, records)
    partial = await wait_for_output_count(settings, 200, timeout_s=90)
    assert 200 <= len(partial.accounted("position")) < len(positions), "kill must land mid-stream"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    process_factory(settings, "worker", log_name="successor")
    audit = await audit_outputs(settings, positions, by="position", timeout_s=180, settle_s=2)
    missing = audit.missing(positions, "position")
    print(
        f"kill -9 after {len(partial.accounted('position'))} outputs: duplicates={audit.duplicates()}"
    )
    assert not missing, f"{len(missing)} ids lost, e.g. {sorted(missing)[:5]}"


async def labeling_workers(settings: Settings) -> set[str]:
    """The workers that have labeled something on the output topic so far."""
    workers: set[str] = set()
    async for rec in read_topics(settings, [settings.output_topic], idle_timeout_s=1):
        workers.add(json.loads(rec.value)["worker"])
    return workers


async def test_second_worker_joining_mid_stream_splits_partitions(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    """A rebalance under load: nothing lost, both workers label, both stop on SIGTERM."""
    settings = settings_factory(broker, max_batch=8)
    await ensure_topics(settings, pipeline_topics(settings))
    first = process_factory(settings, "worker", log_name="w1")
    records, _ = mixed_feed(2000)
    positions = await publish(settings, records)
    await wait_for_output_count(settings, 150, timeout_s=90)
    second = process_factory(settings, "worker", log_name="w2")
    # Keep the stream going until the joiner labels something: its start-up and the
    # rebalance take longer on a loaded machine, and a fixed stream could end first.
    deadline = time.monotonic() + 180
    while len(await labeling_workers(settings)) < 2:
        assert time.monotonic() < deadline, "the second worker got no partitions"
        more, _ = mixed_feed(100)
        positions += await publish(settings, more)
        await asyncio.sleep(1)
    audit = await audit_outputs(settings, positions, by="position", timeout_s=240, settle_s=1)
    missing = audit.missing(positions, "position")
    assert not missing, f"{len(missing)} lost"
    for proc in (first, second):
        proc.send_signal(signal.SIGTERM)
    assert [first.wait(timeout=30), second.wait(timeout=30)] == [0, 0]
    print(f"rebalance under load: duplicates={audit.duplicates()}")


async def test_oversized_input_is_dead_lettered_cut_with_its_size(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(broker, max_message_bytes=2000)
    huge = json.dumps({"id": "huge", "text": "z" * 5000}).encode()
    worker, task = await start_worker(settings)
    try:
        positions = await publish(
            settings, [(b"huge", huge), (b"ok", b'{"id": "ok", "text": "fine"}')]
        )
        audit = await audit_outputs(settings, positions, by="position", timeout_s=60)
    finally:
        await stop_worker(worker, task)
    assert audit.reasons_at[positions[0]] == m.MESSAGE_TOO_LARGE
    assert audit.labeled["ok"] == 1
    async for rec in read_topics(settings, [settings.dlq_topic], idle_timeout_s=1):
        headers = dict(rec.headers)
        assert rec.value == huge[:2000]
        assert headers["feedpulse.original.size"] == str(len(huge)).encode()
        assert headers["feedpulse.original.truncated"] == b"true"
        break
    else:
        pytest.fail("no dead letter")


async def test_redelivered_outputs_repeat_their_id_header_so_deduplication_is_exact(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that dies after its outputs are acknowledged but before its commit: the
    batch is classified again. Every copy carries the same `feedpulse.id` header, key and
    labels, so keeping the first record per header gives exactly one output per input."""
    # fp32: int8 activations are quantized per batch, so scores could move with batchmates.
    settings = settings_factory(broker, max_batch=8, model_variant="fp32")
    records, _ = mixed_feed(40)
    first, task = await start_worker(settings)

    async def acknowledged_but_never_committed(delivery: Delivery, batch: Any) -> bool:
        return True

    monkeypatch.setattr(Delivery, "_commit", acknowledged_but_never_committed)
    try:
        positions = await publish(settings, records)
        await audit_outputs(settings, positions, by="position", timeout_s=90)
    finally:
        await stop_worker(first, task)
        monkeypatch.undo()  # the second worker commits as usual

    second, task = await start_worker(settings)
    copies: defaultdict[str, list[Any]] = defaultdict(list)
    deadline = time.monotonic() + 120
    try:
        async for rec in read_topics(
            settings, [settings.output_topic, settings.dlq_topic], yield_idle=True
        ):
            if rec is not None:
                copies[decode_headers(rec.headers)["feedpulse.id"]].append(rec)
            if sum(map(len, copies.values())) >= 2 * len(positions):
                break
            assert time.monotonic() < deadline, "the batches were not redelivered"
    finally:
        await stop_worker(second, task)

    assert all(len(recs) == 2 for recs in copies.values()), "every input exactly twice"
    deduplicated = {item_id: recs[0] for item_id, recs in copies.items()}
    seen_at = set()
    for item_id, (a, b) in copies.items():
        assert (a.topic, a.key) == (b.topic, b.key), item_id
        if a.topic == settings.dlq_topic:
            ha, hb = decode_headers(a.headers), decode_headers(b.headers)
            assert a.value == b.value and ha["feedpulse.reason"] == hb["feedpulse.reason"]
            seen_at.add((int(ha["feedpulse.source.partition"]), int(ha["feedpulse.source.offset"])))
            continue
        da, db = json.loads(a.value), json.loads(b.value)
        assert da["id"] == db["id"] == item_id
        assert da["worker"] != db["worker"]  # really two classifications
        for task_name, label in da["labels"].items():
            assert db["labels"][task_name]["label"] == label["label"], item_id
            assert db["labels"][task_name]["score"] == pytest.approx(label["score"], abs=1e-4)
        seen_at.add((da["input"]["partition"], da["input"]["offset"]))
    assert len(deduplicated) == len(positions)
    assert seen_at == set(positions)


async def test_exactly_once_on_a_broker_without_transactions_fails_fast(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Any,
) -> None:
    """The embedded broker (Tansu) has no transactions: a clear error, no hang, no traceback."""
    settings = settings_factory(broker, exactly_once=True)
    worker, task = await start_worker(settings)
    started = time.monotonic()
    try:
        with pytest.raises(TransactionsUnsupportedError, match="does not support transactions"):
            await asyncio.wait_for(task, 60)
    finally:
        await worker.classifier.close()
    assert time.monotonic() - started < 45

    proc = process_factory(settings, "worker", log_name="exactly-once")
    assert proc.wait(timeout=90) == 2
    log = (tmp_path / "exactly-once-0.log").read_text()
    assert "does not support transactions" in log
    assert "at-least-once" in log
    assert "Traceback" not in log


async def test_worker_startup_log_never_shows_the_sasl_password(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Any,
) -> None:
    """A worker with SASL credentials configured (PLAINTEXT, so the embedded broker lets it
    in) logs its whole debug startup, client configuration included, without the password."""
    password = "pw-5b1e-never-in-logs"
    settings = settings_factory(
        broker, sasl_mechanism="PLAIN", sasl_username="feedpulse", sasl_password=password
    )
    proc = process_factory(settings, "worker", "--verbose", log_name="sasl")
    log_path = tmp_path / "sasl-0.log"
    deadline = time.monotonic() + 90
    while "partitions assigned: [" not in log_path.read_text(errors="replace"):
        assert proc.poll() is None, log_path.read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker never got partitions"
        await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = log_path.read_text(errors="replace")
    assert "worker started" in text and "DEBUG" in text
    assert password not in text
