"""Watched (task, label) pairs: any task's label can spike, multi-label tasks per label, the
default (sentiment negative and positive) exactly as before, bad pairs refused at startup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from streams.alerts.app import spike_settings
from streams.alerts.records import KeyedItem, LabeledRecord, parse_event, parse_labeled
from streams.alerts.spike_detector import (
    DEFAULT_WATCH,
    SpikeDetector,
    SpikeSettings,
    alert_id,
    new_state,
)
from streams.label_pairs import WatchPair, parse_pair, parse_pairs
from streams.settings import load_settings
from streams.testing.replay import Burst, labeled_doc
from tests.alert_support import START_TS, HandlerRig, stream, unit_settings

ANGER = WatchPair("emotion", "anger")


def emotion_doc(n: int, key: str, ts: float, labels: list[str] | None) -> dict[str, Any]:
    """A labeled document with a multi-label `emotion` task (None: the task is missing)."""
    doc = labeled_doc(f"e{n}", "text", "neutral", key, ts)
    if labels is not None:
        doc["labels"]["emotion"] = {"labels": labels, "scores": dict.fromkeys(labels, 0.9)}
    return doc


def emotion_stream(
    burst: range, windows: int = 20, per_window: int = 25, key: str = "ticker:T0"
) -> list[dict[str, Any]]:
    """1 in 10 items angry (some also surprised), 9 in 10 in the windows of `burst`."""
    docs = []
    for w in range(windows):
        for i in range(per_window):
            angry = i % 10 < (9 if w in burst else 1)
            labels = ["anger", "surprise"] if angry and i % 2 else ["anger"] if angry else []
            docs.append(emotion_doc(w * per_window + i, key, START_TS + w * 10 + i * 0.35, labels))
    return docs


def total(metric: Any, **labels: str) -> float:
    """The sum of a metric's series (counters: their `_total` samples) with these labels."""
    return float(
        sum(
            s.value
            for family in metric.collect()
            for s in family.samples
            if not s.name.endswith("_created") and labels.items() <= s.labels.items()
        )
    )


async def run(rig: HandlerRig, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for doc in docs:
        name, value = next(iter(doc["meta"].items()))
        await rig.labeled(json.dumps(doc).encode(), key=f"{name}:{value}".encode())
    await rig.tick()
    return rig.alert_docs()


# -- the setting --------------------------------------------------------------------------


def test_the_default_watches_negative_and_positive_sentiment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FEEDPULSE_ALERT_WATCH", raising=False)
    settings = load_settings()
    assert settings.alert_watch == ["sentiment:negative", "sentiment:positive"]
    assert spike_settings(settings).watch == DEFAULT_WATCH == SpikeSettings().watch
    # Sentiment pairs keep their bare label as slot: restored states and alert ids hold.
    assert [p.slot for p in DEFAULT_WATCH] == ["negative", "positive"]


def test_pairs_come_from_the_environment_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPULSE_ALERT_WATCH", '["emotion:anger", "sentiment:negative"]')
    watch = spike_settings(load_settings()).watch
    assert watch == (ANGER, WatchPair("sentiment", "negative"))
    assert [p.slot for p in watch] == ["emotion:anger", "negative"]
    assert parse_pair("topic:Sci/Tech:AI") == WatchPair("topic", "Sci/Tech:AI")


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        (["sentiment"], "'sentiment' is not a task:label pair: write \"task:label\""),
        (["emotion:"], "'emotion:' is not a task:label pair"),
        ([":anger"], "':anger' is not a task:label pair"),
        (["emotion: anger"], "'emotion: anger': the label has spaces around it"),
        (["emotion:" + "x" * 65], "the label is longer than 64 characters"),
        ([], "watch at least one task:label pair"),
        (["emotion:anger", "emotion:anger"], "'emotion:anger' is watched twice"),
        (
            ["emotion:anger", "sentiment:emotion:anger"],
            "'emotion:anger' and 'sentiment:emotion:anger' cannot both be watched",
        ),
    ],
)
def test_a_bad_pair_is_refused_with_what_is_wrong(watch: list[str], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(alert_watch=watch)
    assert "alert_watch" in str(caught.value) and message in str(caught.value)
    with pytest.raises(ValueError) as direct:  # the same words for the app's own parse
        parse_pairs(watch)
    assert message in str(direct.value)


# -- what a document counts toward --------------------------------------------------------


def read(doc: dict[str, Any]) -> LabeledRecord:
    record = parse_labeled(json.dumps(doc).encode(), 100_000)
    assert isinstance(record, LabeledRecord), record
    return record


def test_a_multi_label_item_counts_toward_each_of_its_labels() -> None:
    surprise, joy = WatchPair("emotion", "surprise"), WatchPair("emotion", "joy")
    negative = WatchPair("sentiment", "negative")
    pairs = [ANGER, surprise, joy, negative]
    doc = emotion_doc(1, "ticker:T0", START_TS, ["anger", "surprise"])
    doc["labels"]["sentiment"]["label"] = "negative"
    assert read(doc).carried(pairs) == [ANGER, surprise, negative]
    assert read(emotion_doc(2, "ticker:T0", START_TS, [])).carried(pairs) == []


def test_a_document_without_a_watched_task_is_read_and_carries_none_of_it() -> None:
    doc = emotion_doc(1, "ticker:T0", START_TS, None)
    del doc["labels"]["sentiment"]
    record = read(doc)
    assert record.sentiment is None and record.carried([ANGER, *DEFAULT_WATCH]) == []
    assert read({**doc, "labels": {}}).carried([ANGER]) == []


def test_keyed_events_name_pairs_old_events_their_sentiment() -> None:
    new = parse_event(b'{"key":"k","ts":1.0,"w":["emotion:anger","negative"],"id":"x"}')
    old = parse_event(b'{"key":"k","ts":1.0,"s":"negative","id":"x"}')
    assert isinstance(new, KeyedItem) and new.slots == ["emotion:anger", "negative"]
    assert isinstance(old, KeyedItem) and old.slots == ["negative"]
    assert isinstance(parse_event(b'{"key":"k","ts":1.0,"w":[""],"id":"x"}'), str)


# -- end to end through the handlers ------------------------------------------------------


async def test_an_anger_burst_over_multi_label_documents_fires_one_alert() -> None:
    rig = HandlerRig(unit_settings(alert_watch=["emotion:anger"]))
    found = await run(rig, emotion_stream(burst=range(14, 16)))
    assert len(found) == 1, found
    alert = found[0]
    assert (alert["key"], alert["task"], alert["label"]) == ("ticker:T0", "emotion", "anger")
    assert "sentiment" not in alert  # only a sentiment pair's alert names a sentiment
    assert alert["window"]["start"] <= START_TS + 140 < alert["window"]["end"]
    assert alert["share"] >= 0.5 and alert["baseline"] == pytest.approx(0.12, abs=0.03)
    assert alert["volume"] == 25 and alert["sample_ids"]
    slot = round(alert["window"]["end"] / 5) - 1  # 5 s slots: 10 s windows, 2 hops
    assert alert["id"] == alert_id("ticker:T0", "emotion:anger", slot)
    m = rig.metrics.watched
    fired = m.label_alerts.labels(severity=alert["severity"], task="emotion", label="anger")
    assert fired._value.get() == 1
    score = m.label_spike_score.labels(key="ticker:T0", task="emotion", label="anger")
    assert score._value.get() < rig.settings.alert_threshold  # the burst is over
    # Over every key label (a key's first items count as key="other", see KeyLabels).
    assert total(m.key_items) == 500
    # 3 of 25 items angry, 23 of 25 in the burst's two windows.
    assert total(m.label_items, task="emotion", label="anger") == 18 * 3 + 2 * 23
    assert total(m.alerts) == 0 and total(m.spike_score) == 0  # sentiment's, unwatched
    assert rig.dlq.sent == []


async def test_a_surprise_watch_is_scored_on_the_same_items_per_label() -> None:
    rig = HandlerRig(unit_settings(alert_watch=["emotion:anger", "emotion:surprise"]))
    found = await run(rig, emotion_stream(burst=range(14, 16)))
    # Half the angry items are also surprised: both labels spike in the same window, and
    # the key's one cooldown holds both to one alert each.
    assert sorted(a["label"] for a in found) == ["anger", "surprise"]
    assert len({a["window"]["start"] for a in found}) == 1


async def test_documents_without_the_watched_task_count_in_volume_only() -> None:
    rig = HandlerRig(unit_settings(alert_watch=["emotion:anger"]))
    docs = emotion_stream(burst=range(14, 16))
    # A model without the emotion head for a third of the items, before and in the burst.
    for doc in docs[::3]:
        del doc["labels"]["emotion"]
    found = await run(rig, docs)
    assert rig.dlq.sent == [] and rig.count(rig.metrics.unreadable) == 0
    assert rig.count(rig.metrics.key_updates) == len(docs)
    # Every item is in the window's volume, so the share is diluted (23 of 25 with all).
    assert len(found) == 1 and found[0]["volume"] == 25 and found[0]["share"] <= 0.68
    # Sentiment-only documents with the default watch: counted, nothing fires, nothing breaks.
    quiet = HandlerRig(unit_settings(alert_watch=["emotion:anger"]))
    plain = [labeled_doc(f"p{i}", "t", "negative", "ticker:T1", START_TS + i) for i in range(300)]
    assert await run(quiet, plain) == [] and quiet.dlq.sent == []
    assert quiet.count(quiet.metrics.windows_closed) > 0


# -- the default, unchanged ---------------------------------------------------------------

# What the alert worker published for this replay before the pairs were configurable
# (commit 0c26c05), less the fields added since: "task" and "label".
BEFORE = [
    {
        "id": "111ceaccf82f32bc6da1",
        "key": "ticker:T3",
        "sentiment": "negative",
        "window": {"start": 1700000115.0, "end": 1700000125.0},
        "share": 0.6667,
        "baseline": 0.2645,
        "score": 4.067,
        "severity": "warning",
        "volume": 24,
        "sample_ids": ["r1803", "r1811", "r1819", "r1826", "r1828"],
        "model_version": "gold",
    },
    {
        "id": "f28353d5778404c711eb",
        "key": "ticker:T1",
        "sentiment": "negative",
        "window": {"start": 1700000200.0, "end": 1700000210.0},
        "share": 1.0,
        "baseline": 0.3237,
        "score": 9.656,
        "severity": "critical",
        "volume": 25,
        "sample_ids": ["r3081", "r3100", "r3102", "r3105", "r3108"],
        "model_version": "gold",
    },
]


async def test_the_default_watch_publishes_what_it_did_before() -> None:
    rig = HandlerRig(unit_settings(), clock=lambda: START_TS + 10_000)
    bursts = [Burst("ticker:T3", start=12, windows=2), Burst("ticker:T1", start=20, share=0.9)]
    found = await run(rig, stream(bursts, windows=30))
    assert [{k: v for k, v in a.items() if k not in ("task", "label")} for a in found] == BEFORE
    assert [(a["task"], a["label"]) for a in found] == [("sentiment", "negative")] * 2
    m = rig.metrics.watched
    assert m.alerts.labels(severity="critical", sentiment="negative")._value.get() == 1
    assert m.spike_score.labels(key="ticker:T1", sentiment="negative")._value.get() == (
        m.label_spike_score.labels(key="ticker:T1", task="sentiment", label="negative")._value.get()
    )
    neutral = m.sentiment.labels(key="ticker:T3", sentiment="neutral")._value.get()
    assert neutral > 0  # every sentiment class still has its series


def test_a_state_from_before_the_pairs_keeps_its_baseline_and_volume() -> None:
    detector = SpikeDetector(SpikeSettings(window_s=10.0, min_volume=2, warmup_windows=1))
    state = new_state()
    # As the detector wrote it then: counts for every sentiment class, no "volume".
    state["open"]["3"] = {"counts": {"negative": 2, "neutral": 3, "positive": 1}, "samples": {}}
    state["last"] = 2
    state["baseline"]["negative"] = {"mean": 0.5, "var": 0.0, "n": 9}
    detector.add(state, "k", 17.0, ["negative"], "x", None)
    (result,) = detector.close_if_before(state, "k", 100.0)
    assert result.volume == 7 and state["baseline"]["negative"]["n"] == 10
    assert set(state["baseline"]) == {"negative", "positive"}
