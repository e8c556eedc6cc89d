"""Sentiment spike detection per key over tumbling event-time windows.

Each key (a source, a topic label, a `meta` field such as a ticker) keeps its current
window's counts per sentiment class and a robust rolling baseline of each watched class's
share: an exponentially weighted mean and deviation, updated only from windows with enough
volume, with spikes clipped before they enter it. A closed window whose share sits more
than `threshold` deviations (never less than the window's binomial noise) above the baseline fires one alert; the key then cools down
for `cooldown_windows`, so one burst gives one alert, not a storm.

The state is plain JSON-able data so it can live in a changelogged table and be restored
after a restart. One duplicated or skipped record moves a share by 1/volume, far below
any threshold; alert ids are derived from (key, window), so a re-emitted alert is
recognisably the same one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SENTIMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class SpikeSettings:
    """Detector knobs (from the settings object)."""

    window_s: float = 60.0
    watch: tuple[str, ...] = ("negative", "positive")
    threshold: float = 4.0
    critical: float = 8.0
    min_volume: int = 20
    warmup_windows: int = 5
    alpha: float = 0.1
    # Floor on the deviation (share units): a flat baseline must not turn noise into alerts.
    min_deviation: float = 0.04
    cooldown_windows: int = 5
    samples: int = 5


@dataclass(frozen=True)
class Alert:
    """One spike: what, where, how far from normal, and example inputs."""

    id: str
    key: str
    sentiment: str
    window_start: float
    window_end: float
    share: float
    baseline: float
    deviation: float
    score: float
    severity: str
    volume: int
    sample_ids: tuple[str, ...]
    model_version: str | None

    def to_json(self) -> dict[str, Any]:
        """The document published on the alerts topic."""
        return {
            "id": self.id,
            "key": self.key,
            "sentiment": self.sentiment,
            "window": {"start": self.window_start, "end": self.window_end},
            "share": round(self.share, 4),
            "baseline": round(self.baseline, 4),
            "deviation": round(self.deviation, 4),
            "score": round(self.score, 3),
            "severity": self.severity,
            "volume": self.volume,
            "sample_ids": list(self.sample_ids),
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class WindowResult:
    """A closed window of one key: its scores per watched class and any alert it fired."""

    key: str
    window: int
    volume: int
    scores: dict[str, float]
    alerts: tuple[Alert, ...]


def new_state() -> dict[str, Any]:
    """An empty key state (JSON-able)."""
    return {
        "window": None,
        "counts": dict.fromkeys(SENTIMENTS, 0),
        "samples": {},
        "model_version": None,
        "baseline": {},
        "cooldown_until": -1,
    }


def alert_id(key: str, sentiment: str, window: int) -> str:
    """Stable id of the alert for (key, sentiment, window)."""
    raw = f"{key}\x00{sentiment}\x00{window}".encode()
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


class SpikeDetector:
    """Adds labeled items to key states and closes windows; holds no state of its own."""

    def __init__(self, settings: SpikeSettings) -> None:
        self.settings = settings

    def window_of(self, ts: float) -> int:
        """The tumbling window index of event time `ts` (seconds)."""
        return math.floor(ts / self.settings.window_s)

    def add(
        self,
        state: dict[str, Any],
        key: str,
        ts: float,
        sentiment: str,
        item_id: str,
        model_version: str | None,
    ) -> tuple[WindowResult | None, bool]:
        """Count one item into `state` (mutated). Returns (the window it closed, counted?).

        An item older than the key's current window is late: not counted (False).
        """
        window = self.window_of(ts)
        closed = None
        if state["window"] is None:
            state["window"] = window
        elif window > state["window"]:
            closed = self.close(state, key)
            state["window"] = window
        elif window < state["window"]:
            return None, False
        if sentiment in state["counts"]:
            state["counts"][sentiment] += 1
            samples = state["samples"].setdefault(sentiment, [])
            if len(samples) < self.settings.samples:
                samples.append(item_id)
        state["model_version"] = model_version
        return closed, True

    def close_if_before(
        self, state: dict[str, Any], key: str, watermark: float
    ) -> WindowResult | None:
        """Close the key's window if it ended at or before `watermark` (event time)."""
        if state["window"] is None:
            return None
        end = (state["window"] + 1) * self.settings.window_s
        if end > watermark:
            return None
        result = self.close(state, key)
        state["window"] = None
        return result

    def close(self, state: dict[str, Any], key: str) -> WindowResult:
        """Score the current window against the baseline, update the baseline, reset counts."""
        s = self.settings
        window = int(state["window"])
        counts = state["counts"]
        volume = sum(counts.values())
        scores: dict[str, float] = {}
        alerts: list[Alert] = []
        for sentiment in s.watch:
            base = state["baseline"].get(sentiment)
            share = counts.get(sentiment, 0) / volume if volume else 0.0
            if volume < s.min_volume:
                continue
            if base is None:
                state["baseline"][sentiment] = {"mean": share, "var": 0.0, "n": 1}
                continue
            # Never below the binomial noise of a share over `volume` items: early baselines
            # underestimate their variance, and small windows are noisy by nature.
            sampling = math.sqrt(max(base["mean"] * (1 - base["mean"]), 0.0) / volume)
            deviation = max(math.sqrt(base["var"]), sampling, s.min_deviation)
            score = (share - base["mean"]) / deviation
            if base["n"] >= s.warmup_windows:  # before that the baseline is not worth a score
                scores[sentiment] = score
            if base["n"] >= s.warmup_windows and score >= s.threshold:
                if window > state["cooldown_until"]:
                    alerts.append(
                        Alert(
                            id=alert_id(key, sentiment, window),
                            key=key,
                            sentiment=sentiment,
                            window_start=window * s.window_s,
                            window_end=(window + 1) * s.window_s,
                            share=share,
                            baseline=base["mean"],
                            deviation=deviation,
                            score=score,
                            severity="critical" if score >= s.critical else "warning",
                            volume=volume,
                            sample_ids=tuple(state["samples"].get(sentiment, [])),
                            model_version=state["model_version"],
                        )
                    )
                # A spike must not become the new normal: clip what enters the baseline.
                share = base["mean"] + s.threshold * deviation
            delta = share - base["mean"]
            base["mean"] += s.alpha * delta
            base["var"] = (1 - s.alpha) * (base["var"] + s.alpha * delta * delta)
            base["n"] += 1
        if alerts:
            state["cooldown_until"] = window + s.cooldown_windows
        state["counts"] = dict.fromkeys(SENTIMENTS, 0)
        state["samples"] = {}
        return WindowResult(key, window, volume, scores, tuple(alerts))


def item_keys(doc: dict[str, Any], meta_fields: Sequence[str]) -> list[str]:
    """The alert keys a labeled item counts towards: its source, its topic, chosen meta fields."""
    keys: list[str] = []
    source = doc.get("source")
    if isinstance(source, str) and source:
        keys.append(f"source:{source}")
    topic = doc.get("labels", {}).get("topic", {}).get("label")
    if isinstance(topic, str):
        keys.append(f"topic:{topic}")
    meta = doc.get("meta")
    if isinstance(meta, dict):
        for name in meta_fields:
            value = meta.get(name)
            values = value if isinstance(value, list) else [value]
            for v in values[:10]:
                if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
                    keys.append(f"{name}:{v}")
    return keys
