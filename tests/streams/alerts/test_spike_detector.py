"""The spike detector on synthetic windows: one alert per burst, quiet otherwise."""

from __future__ import annotations

import math
import random
from typing import Any

from streams.alerts.spike_detector import SpikeDetector, SpikeSettings, item_keys, new_state
from streams.metrics import KeyLabels

SETTINGS = SpikeSettings(window_s=10.0, min_volume=20, warmup_windows=5, cooldown_windows=5)


def feed(
    detector: SpikeDetector,
    state: dict[str, Any],
    windows: list[tuple[int, float]],
    *,
    seed: int = 0,
    key: str = "ticker:ACME",
) -> list[Any]:
    """Stream `(volume, negative share)` per window; return every closed window's result."""
    rng = random.Random(seed)
    results = []
    n = 0
    for w, (volume, negative) in enumerate(windows):
        for i in range(volume):
            sentiment = (
                "negative" if rng.random() < negative else rng.choice(["neutral", "positive"])
            )
            closed, counted = detector.add(
                state, key, w * 10.0 + i * 9.0 / volume, sentiment, f"id-{n}", "3"
            )
            n += 1
            assert counted
            results.extend(closed)
    results.extend(detector.close_if_before(state, key, len(windows) * 10.0))
    return results


def alerts_of(results: list[Any]) -> list[Any]:
    return [a for r in results for a in r.alerts]


def test_a_burst_fires_exactly_one_alert_in_its_window() -> None:
    detector = SpikeDetector(SETTINGS)
    windows = [(60, 0.15)] * 20 + [(60, 0.7)] * 3 + [(60, 0.15)] * 20
    alerts = alerts_of(feed(detector, new_state(), windows))
    assert len(alerts) == 1
    alert = alerts[0]
    # Windows hop by half: the first one holding half a window of burst already fires.
    assert alert.sentiment == "negative" and alert.window_start == 195.0
    assert alert.share > 0.35 and alert.baseline < 0.25 and alert.score >= SETTINGS.threshold
    assert alert.volume == 60 and len(alert.sample_ids) == SETTINGS.samples
    assert alert.model_version == "3"
    assert alert.to_json()["window"] == {"start": 195.0, "end": 205.0}


def test_stationary_stream_stays_quiet() -> None:
    detector = SpikeDetector(SETTINGS)
    for seed in range(5):
        assert alerts_of(feed(detector, new_state(), [(40, 0.3)] * 300, seed=seed)) == []


def test_low_volume_windows_neither_alert_nor_move_the_baseline() -> None:
    detector = SpikeDetector(SETTINGS)
    state = new_state()
    windows = [(50, 0.1)] * 10 + [(5, 1.0)] * 5
    assert alerts_of(feed(detector, state, windows)) == []
    assert abs(math.sin(state["baseline"]["negative"]["mean"]) ** 2 - 0.1) < 0.05


def test_a_second_burst_after_the_cooldown_alerts_again() -> None:
    detector = SpikeDetector(SETTINGS)
    windows = [(60, 0.1)] * 10 + [(60, 0.8)] + [(60, 0.1)] * 10 + [(60, 0.8)] + [(60, 0.1)] * 3
    alerts = alerts_of(feed(detector, new_state(), windows))
    assert [a.window_start for a in alerts] == [95.0, 205.0]


def test_one_duplicated_or_skipped_item_changes_nothing() -> None:
    windows = [(60, 0.15)] * 15 + [(60, 0.7)] + [(60, 0.15)] * 5
    base = alerts_of(feed(SpikeDetector(SETTINGS), new_state(), windows))
    detector = SpikeDetector(SETTINGS)
    state = new_state()
    rng = random.Random(0)
    results = []
    for w, (volume, negative) in enumerate(windows):
        for i in range(volume):
            sentiment = (
                "negative" if rng.random() < negative else rng.choice(["neutral", "positive"])
            )
            ts = w * 10.0 + i * 9.0 / volume
            repeats = 2 if (w, i) == (15, 3) else 0 if (w, i) == (15, 4) else 1
            for _ in range(repeats):
                closed, _ = detector.add(state, "ticker:ACME", ts, sentiment, f"id-{w}-{i}", "3")
                results.extend(closed)
    results.extend(detector.close_if_before(state, "ticker:ACME", 1e9))
    again = alerts_of(results)
    assert [(a.id, a.window_start) for a in again] == [(a.id, a.window_start) for a in base]


def test_late_items_are_not_counted() -> None:
    detector = SpikeDetector(SETTINGS)
    state = new_state()
    detector.add(state, "k", 25.0, "negative", "a", None)
    closed, counted = detector.add(state, "k", 31.0, "negative", "b", None)
    assert [r.window for r in closed] == [5]  # slot [25, 30) closed by a later item
    closed, counted = detector.add(state, "k", 26.0, "negative", "c", None)
    assert closed == [] and not counted  # its slot is closed already


def test_items_out_of_order_within_the_grace_are_counted() -> None:
    detector = SpikeDetector(SETTINGS, grace_s=4.0)
    state = new_state()
    for ts in (25.0, 31.0, 26.0, 33.0):  # 26 arrives after 31: within 4 s of grace
        closed, counted = detector.add(state, "k", ts, "negative", str(ts), None)
        assert counted and closed == []
    closed, _ = detector.add(state, "k", 34.5, "neutral", "x", None)
    assert [(r.window, r.volume) for r in closed] == [(5, 2)]


def test_tumbling_windows_when_hops_is_one() -> None:
    detector = SpikeDetector(SpikeSettings(window_s=10.0, hops=1, min_volume=20))
    windows = [(60, 0.15)] * 20 + [(60, 0.7)] + [(60, 0.15)] * 5
    alerts = alerts_of(feed(detector, new_state(), windows))
    assert [(a.window_start, a.window_end) for a in alerts] == [(200.0, 210.0)]


def test_keys_come_from_source_topic_and_meta_fields() -> None:
    doc = {
        "source": "wire",
        "labels": {"topic": {"label": "Business"}},
        "meta": {"ticker": ["ACME", "INIT"], "entity": None, "hashtag": True, "other": "x"},
    }
    assert item_keys(doc, ["ticker", "entity", "hashtag"]) == [
        "source:wire",
        "topic:Business",
        "ticker:ACME",
        "ticker:INIT",
    ]


def test_key_labels_are_bounded() -> None:
    labels = KeyLabels(limit=3, min_count=2)
    seen = {labels.label(f"k{i % 5000}") for i in range(20_000)}
    assert len(seen) == 4 and "other" in seen
    assert labels.label("k1") == labels.label("k1")


def test_an_item_that_does_not_advance_is_counted_but_closes_nothing() -> None:
    detector = SpikeDetector(SETTINGS)
    state = new_state()
    detector.add(state, "k", 12.0, "negative", "a", None)
    closed, counted = detector.add(state, "k", 1e6, "neutral", "b", None, advance=False)
    assert closed == [] and counted and state["max_ts"] == 12.0
    assert sorted(state["open"]) == ["2", str(detector.slot_of(1e6))]
    assert detector.newest_time(state) == detector.slot_of(1e6) * detector.hop_s
    assert detector.newest_time(new_state()) is None


def test_newest_time_follows_the_newest_item() -> None:
    detector = SpikeDetector(SETTINGS)
    state = new_state()
    for ts in (3.0, 17.0, 18.5):
        detector.add(state, "k", ts, "negative", str(ts), None)
    assert detector.newest_time(state) == 18.5
    detector.close_if_before(state, "k", 1e9)
    assert state["open"] == {} and detector.newest_time(state) == 18.5


def test_overlong_values_are_no_keys() -> None:
    doc = {"source": "s" * 201, "meta": {"ticker": ["A" * 200, "B" * 201, 10**30, 42]}}
    assert item_keys(doc, ["ticker"]) == [f"ticker:{'A' * 200}", "ticker:42"]
