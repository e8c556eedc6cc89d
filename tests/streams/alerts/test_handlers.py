"""The alert app's handlers in process (a dict for the table, lists for the topics): poison
is dead-lettered with its bytes, untrusted clocks move nothing, idle keys are evicted."""

from __future__ import annotations

import json
import logging
import pickle
import time
import tracemalloc
from typing import Any

import pytest

from streams.alerts.records import (
    INVALID_ALERT_EVENT,
    INVALID_ALERT_STATE,
    INVALID_LABELED_RECORD,
    StateCodec,
)
from streams.kafka.records import DLQ_HEADER_PREFIX
from streams.testing.replay import Burst, labeled_doc
from tests.alert_support import START_TS, HandlerRig, stream, unit_settings

YEAR_2100_MS = 4_102_444_800_000


def good(i: int, key: str = "ticker:T0", ts: float = START_TS) -> bytes:
    return json.dumps(labeled_doc(f"g{i}", "text", "negative", key, ts)).encode()


async def test_poison_labeled_records_are_dead_lettered_with_their_bytes() -> None:
    rig = HandlerRig(unit_settings())
    poison = [
        None,
        b"not json",
        b"[1, 2, 3]",
        b'{"id": 1, "labels": {}, "input": {}}',
        json.dumps(
            {**labeled_doc("p", "t", "negative", "ticker:T0", START_TS), "id": None}
        ).encode(),
        b"{" * 50_000,
        b"\xff" * 2_000_000,
    ]
    for i, value in enumerate(poison):
        await rig.labeled(value, key=f"k{i}".encode())
        await rig.labeled(good(i), key=b"ticker:T0")

    assert [s.value for s in rig.dlq.sent] == [
        v
        if v is None or len(v) <= rig.settings.max_message_bytes
        else v[: rig.settings.max_message_bytes]
        for v in poison
    ]
    assert [s.key for s in rig.dlq.sent] == [f"k{i}".encode() for i in range(len(poison))]
    headers = [s.headers for s in rig.dlq.sent]
    assert {h[DLQ_HEADER_PREFIX + "reason"] for h in headers} == {INVALID_LABELED_RECORD}
    assert all(h[DLQ_HEADER_PREFIX + "error"] for h in headers)
    assert [h[DLQ_HEADER_PREFIX + "source.offset"] for h in headers] == [
        str(2 * i) for i in range(len(poison))
    ]
    assert headers[-1][DLQ_HEADER_PREFIX + "original.truncated"] == "true"
    m = rig.metrics
    assert m.dead_lettered.labels(reason=INVALID_LABELED_RECORD)._value.get() == len(poison)
    assert rig.count(m.unreadable) == len(poison)
    assert rig.count(m.records) == 2 * len(poison)
    assert rig.count(m.key_updates) == len(poison)  # every good record still counted


async def test_poison_on_the_keyed_topic_is_dead_lettered_and_the_rest_goes_on() -> None:
    rig = HandlerRig(unit_settings())
    await rig.labeled(good(0), key=b"ticker:T0")
    far = time.time() + 10 * rig.settings.alert_max_skew_s
    poison = [
        None,
        b"{not json",
        b'{"tick": false}',
        b'{"key":"k","ts":NaN,"s":"negative","id":"x"}',
        json.dumps({"key": "k", "ts": far, "s": "negative", "id": "x"}).encode(),
    ]
    for value in poison:
        await rig.keyed_event(value)
    assert [s.value for s in rig.dlq.sent] == poison
    assert rig.dlq.sent[0].key == b"keyed-0-1"  # neither key nor value: keyed by position
    reasons = {s.headers[DLQ_HEADER_PREFIX + "reason"] for s in rig.dlq.sent}
    assert reasons == {INVALID_ALERT_EVENT}
    assert rig.handlers.watermarks == {p: START_TS for p in rig.handlers.watermarks}
    await rig.labeled(good(1), key=b"ticker:T0")
    assert rig.count(rig.metrics.key_updates) == 2


async def test_a_malformed_restored_state_is_dropped_once_and_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = HandlerRig(unit_settings())
    await rig.labeled(good(0, "ticker:T1"), key=b"ticker:T1")
    # As a restore from the changelog would: new objects in place of the ones written.
    rig.state["ticker:T1"] = {"open": "garbage", "partition": 0}
    rig.state["ticker:T2"] = StateCodec().loads(b"\x00not json")
    rig.state["odd:\ud800"] = [1]  # a key no Kafka client could encode as UTF-8
    with caplog.at_level(logging.WARNING, logger="streams.alerts.app"):
        await rig.labeled(good(1, "ticker:T1", START_TS + 1), key=b"ticker:T1")
        await rig.tick()
        await rig.tick()

    assert sorted(rig.state) == ["ticker:T1"]
    assert rig.state["ticker:T1"]["max_ts"] == START_TS + 1  # a fresh state, one item in it
    dead = {s.key: s for s in rig.dlq.sent}
    assert set(dead) == {b"ticker:T1", b"ticker:T2", b"odd:\\ud800"} and len(rig.dlq.sent) == 3
    assert json.loads(dead[b"ticker:T1"].value or b"") == {"open": "garbage", "partition": 0}
    assert dead[b"ticker:T2"].value == b"\x00not json"
    for sent in dead.values():
        assert sent.headers[DLQ_HEADER_PREFIX + "reason"] == INVALID_ALERT_STATE
        assert sent.headers[DLQ_HEADER_PREFIX + "rebuilt"] == "true"
    reason = rig.metrics.dead_lettered.labels(reason=INVALID_ALERT_STATE)
    assert reason._value.get() == 3
    assert len([r for r in caplog.records if "malformed alert state" in r.message]) == 1


async def test_a_future_dated_item_counts_at_arrival_and_moves_no_clock() -> None:
    rig = HandlerRig(unit_settings(), clock=lambda: START_TS + 3600)
    await rig.labeled(good(0, ts=START_TS), key=b"ticker:T0")
    doc = labeled_doc("future", "t", "negative", "ticker:T0", 0)
    doc["input"]["timestamp_ms"] = YEAR_2100_MS
    await rig.labeled(json.dumps(doc).encode(), key=b"ticker:T0")
    state = rig.state["ticker:T0"]
    assert state["max_ts"] == START_TS and set(rig.handlers.watermarks.values()) == {START_TS}
    assert str(rig.handlers.detector.slot_of(START_TS + 3600)) in state["open"]
    assert rig.count(rig.metrics.future_timestamps) == 1
    assert rig.count(rig.metrics.key_updates) == 2 and rig.count(rig.metrics.late) == 0


async def replay_alerts(rig: HandlerRig, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for n, doc in enumerate(docs):
        name, value = next(iter(doc["meta"].items()))
        await rig.labeled(json.dumps(doc).encode(), key=f"{name}:{value}".encode())
        if n % 50 == 0:
            await rig.tick()
    await rig.tick()
    return rig.alert_docs()


@pytest.mark.parametrize("trust_any_timestamp", [False, True])
async def test_one_record_stamped_2100_does_not_hide_a_burst(trust_any_timestamp: bool) -> None:
    burst = Burst("ticker:T3", start=14, windows=2, share=0.8)
    docs = stream([burst], 24)
    future = labeled_doc("from-2100", "text", "neutral", "ticker:T3", 0)
    future["input"]["timestamp_ms"] = YEAR_2100_MS
    docs.insert(12 * 6 * 25, future)  # two windows before the burst
    # Trusting every timestamp is the behaviour without the fix: the raw stamp is used.
    skew = 1e12 if trust_any_timestamp else 300.0
    found = await replay_alerts(HandlerRig(unit_settings(alert_max_skew_s=skew)), docs)
    if trust_any_timestamp:
        # The key's clock jumped to 2100: every window closed at once, every later item late.
        assert found == []
    else:
        assert [(a["key"], a["sentiment"]) for a in found] == [("ticker:T3", "negative")]
        first_burst_window = START_TS + burst.start * 10.0
        assert found[0]["window"]["start"] <= first_burst_window < found[0]["window"]["end"]


def state_bytes(rig: HandlerRig) -> int:
    """Bytes the alert state takes, by tracemalloc: what a fresh copy of it allocates.

    A copy, because the handlers' other memory (metric label candidates, counters) is not
    state; unpickling rebuilds every dict, list and string the state holds.
    """
    blob = pickle.dumps((rig.state, rig.handlers.checked, rig.handlers.watermarks))
    tracemalloc.start()
    try:
        copy = pickle.loads(blob)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del copy
    return size


async def push_distinct_keys(rig: HandlerRig, n: int, start: int = 0) -> int:
    """`n` items, each for a new hashtag, event time 0.1 s apart; the most keys held."""
    most = 0
    sentiments = ("negative", "neutral", "positive")
    for i in range(start, start + n):
        doc = labeled_doc(f"r{i}", "t", sentiments[i % 3], f"hashtag:h{i}", START_TS + i * 0.1)
        await rig.labeled(json.dumps(doc).encode(), key=f"h{i}".encode())
        if i % 1000 == 999:
            most = max(most, len(rig.state))
            await rig.tick()
    return most


async def test_state_stays_flat_over_100k_distinct_keys() -> None:
    rig = HandlerRig(unit_settings(alert_key_fields=["hashtag"], alert_idle_windows=10))
    most = await push_distinct_keys(rig, 20_000)
    at_20k = state_bytes(rig)
    most = max(most, await push_distinct_keys(rig, 80_000, start=20_000))
    at_100k = state_bytes(rig)
    held = rig.count(rig.metrics.keys_held)
    print(f"state: {at_20k} B at 20k keys, {at_100k} B at 100k; most held {most}, now {held}")
    # 10 windows of 10 s at 10 keys/s is 1,000 live keys, plus up to 1,000 between ticks.
    assert most <= 2_100 and held <= 1_100 and len(rig.state) == held
    assert at_100k <= 1.5 * at_20k and at_100k < 8_000_000
    assert rig.count(rig.metrics.keys_evicted) == 100_000 - len(rig.state)
    assert len(rig.handlers.checked) == len(rig.state)


async def test_without_eviction_the_state_would_grow_with_every_key() -> None:
    # The bound above is not loose: with keys never idle long enough, every key stays.
    rig = HandlerRig(unit_settings(alert_key_fields=["hashtag"], alert_idle_windows=10**6))
    await push_distinct_keys(rig, 5_000)
    assert len(rig.state) == 5_000 and rig.count(rig.metrics.keys_evicted) == 0
