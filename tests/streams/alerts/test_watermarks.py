"""Watermarks held back by the slowest input partition: a stalled partition's items still
count, so a burst it carries is alerted; a source that went quiet stops holding them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.alerts import watermarks
from streams.alerts.watermarks import SourceWatermarks
from streams.testing.replay import Burst
from tests.alert_support import START_TS, WINDOW_S, HandlerRig, stream, unit_settings


def test_the_slowest_live_source_sets_the_watermark_and_it_never_goes_back() -> None:
    now = [0.0]
    marks = SourceWatermarks(idle_s=10.0, clock=lambda: now[0])
    assert marks.current(0) is None
    assert marks.observe(0, "in:0", 100.0) == 100.0
    assert marks.observe(0, "in:1", 90.0) == 100.0  # never backwards
    assert marks.observe(0, "in:0", 130.0) == 100.0  # in:1 at 90 holds it
    assert marks.observe(0, "in:1", 120.0) == 120.0
    now[0] = 11.0  # in:1 quiet for longer than idle_s: in:0 alone sets it
    assert marks.observe(0, "in:0", 140.0) == 140.0
    assert marks.observe(1, "in:1", 50.0) == 50.0  # partitions are apart
    now[0] = 100.0  # everything quiet: the newest time seen
    assert marks.current(0) == 140.0 and marks.lowest() == 50.0


def test_sources_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watermarks, "MAX_SOURCES", 3)
    now = [0.0]
    marks = SourceWatermarks(idle_s=100.0, clock=lambda: now[0])
    for n in range(5):
        now[0] = float(n)
        marks.observe(0, f"in:{n}", 10.0 + n)
    assert sorted(marks.sources[0]) == ["in:2", "in:3", "in:4"]


@pytest.mark.parametrize("source_idle_s", [120.0, 1.0])
async def test_a_burst_on_a_stalled_input_partition_is_still_alerted(source_idle_s: float) -> None:
    # Half of every key's items come from input partition 1, which stalls for six windows
    # (a killed worker's partition, until a replacement catches up) across the burst.
    # Alone, partition 0's half of the burst (~12 items a window) is below alert_min_volume.
    burst = Burst("ticker:T0", start=8, windows=2, share=0.9)
    docs = stream([burst], 16)
    stall = (START_TS + 6 * WINDOW_S, START_TS + 12 * WINDOW_S)
    now = [START_TS]
    settings = unit_settings(alert_source_idle_s=source_idle_s, alert_min_volume=20)
    rig = HandlerRig(settings, clock=lambda: now[0])
    held: list[dict[str, Any]] = []

    async def deliver(doc: dict[str, Any]) -> None:
        name, value = next(iter(doc["meta"].items()))
        await rig.labeled(json.dumps(doc).encode(), key=f"{name}:{value}".encode())

    for n, doc in enumerate(docs):
        partition = n % 2
        doc["input"].update(topic="feeds.raw", partition=partition)
        ts = doc["input"]["timestamp_ms"] / 1000
        if partition == 1 and stall[0] <= ts < stall[1]:
            held.append(doc)
            continue
        if held and ts >= stall[1]:
            for late in held:
                await deliver(late)
            held = []
        now[0] = max(now[0], ts)
        await deliver(doc)
        if n % 50 == 0:
            await rig.tick()
    await rig.tick()

    found = [(a["key"], a["sentiment"]) for a in rig.alert_docs()]
    late = rig.count(rig.metrics.late)
    if source_idle_s > stall[1] - stall[0]:
        assert found == [("ticker:T0", "negative")] and late == 0
    else:
        # Without the hold (what one watermark over every source did), the stalled
        # partition's items are late and the burst goes unseen.
        assert found == [] and late > 0
