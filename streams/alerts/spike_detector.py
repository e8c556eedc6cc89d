"""Label spike detection per key over hopping event-time windows.

Each key (a source, a topic label, a `meta` field such as a ticker) keeps its item count
and, per watched (task, label) pair (streams.label_pairs), the items carrying that label,
in slots of `window_s / hops` seconds; each closed slot scores the window made of the last
`hops` slots, so a burst that starts mid-window is seen half a window sooner than with
tumbling windows. A pair's share is the items carrying its label over all the window's
items (for a multi-label task, per label). Each watched pair's share is compared with a robust
rolling baseline kept on the arcsine-square-root scale (where a share's binomial noise is
about 1/(2 sqrt(volume)) whatever the share, so rare labels are not flagged by skewed
tails): an exponentially weighted mean and deviation, updated only from windows with
enough volume, each value clipped to two deviations before it enters. A window more than
`threshold` deviations (never less than its binomial noise) above the baseline fires one
alert; the key then cools down for `cooldown_windows`, so one burst gives one alert.

The state is plain JSON-able data so it can live in a changelogged table and be restored
after a restart. One duplicated or skipped record moves a share by 1/volume, far below
any threshold; alert ids are derived from (key, pair, window), so a re-emitted alert is
recognisably the same one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.label_pairs import WatchPair

SENTIMENTS = ("negative", "neutral", "positive")
DEFAULT_WATCH = (WatchPair("sentiment", "negative"), WatchPair("sentiment", "positive"))
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class SpikeSettings:
    """Detector knobs (from the settings object)."""

    window_s: float = 60.0
    hops: int = 2
    watch: tuple[WatchPair, ...] = DEFAULT_WATCH
    threshold: float = 4.0
    critical: float = 8.0
    min_volume: int = 20
    warmup_windows: int = 5
    alpha: float = 0.1
    # Floor on the deviation (arcsine units): a flat baseline must not turn noise into alerts.
    min_deviation: float = 0.04
    cooldown_windows: int = 5
    samples: int = 5


@dataclass(frozen=True)
class Alert:
    """One spike: what, where, how far from normal, and example inputs."""

    id: str
    key: str
    pair: WatchPair
    window_start: float
    window_end: float
    share: float
    baseline: float
    score: float
    severity: str
    volume: int
    sample_ids: tuple[str, ...]
    model_version: str | None

    @property
    def sentiment(self) -> str | None:
        """The label of a sentiment pair (None for any other task's)."""
        return self.pair.sentiment

    def to_json(self) -> dict[str, Any]:
        """The document published on the alerts topic.

        "sentiment" only for a sentiment pair: the field consumers read before any other
        task could be watched; "task" and "label" for every pair.
        """
        named = {"sentiment": self.sentiment} if self.sentiment is not None else {}
        return {
            "id": self.id,
            "key": self.key,
            **named,
            "task": self.pair.task,
            "label": self.pair.label,
            "window": {"start": self.window_start, "end": self.window_end},
            "share": round(self.share, 4),
            "baseline": round(self.baseline, 4),
            "score": round(self.score, 3),
            "severity": self.severity,
            "volume": self.volume,
            "sample_ids": list(self.sample_ids),
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class WindowResult:
    """A closed window of one key: its scores per watched pair and any alert it fired."""

    key: str
    window: int
    volume: int
    scores: dict[WatchPair, float]
    alerts: tuple[Alert, ...]


def new_state() -> dict[str, Any]:
    """An empty key state (JSON-able; open slots are keyed by their number as a string)."""
    return {
        "open": {},
        "last": None,
        "max_ts": None,
        "history": [],
        "model_version": None,
        "baseline": {},
        "cooldown_until": -1,
    }


def alert_id(key: str, slot: str, window: int) -> str:
    """Stable id of the alert for (key, pair, window); `slot` is the pair's `WatchPair.slot`."""
    raw = f"{key}\x00{slot}\x00{window}".encode()
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def stabilized(share: float) -> float:
    """arcsin(sqrt(share)): binomial noise becomes ~1/(2 sqrt(n)) at every share."""
    return math.asin(math.sqrt(min(max(share, 0.0), 1.0)))


class SpikeDetector:
    """Adds labeled items to key states and closes slots; holds no state of its own.

    Items may arrive out of event-time order by up to `grace_s`: a slot stays open until
    the key's newest item (or the partition's watermark) is `grace_s` past its end.
    """

    def __init__(self, settings: SpikeSettings, grace_s: float = 0.0) -> None:
        self.settings = settings
        self.grace_s = grace_s
        self.hop_s = settings.window_s / settings.hops
        self.watched = frozenset(pair.slot for pair in settings.watch)

    def slot_of(self, ts: float) -> int:
        """The slot index of event time `ts` (seconds)."""
        return math.floor(ts / self.hop_s)

    def add(
        self,
        state: dict[str, Any],
        key: str,
        ts: float,
        slots: str | Sequence[str],
        item_id: str,
        model_version: str | None,
        *,
        advance: bool = True,
        watermark: float | None = None,
    ) -> tuple[list[WindowResult], bool]:
        """Count one item into `state` (mutated). Returns (windows it closed, counted?).

        `slots` are the watched pairs the item carries (`WatchPair.slot`: one, or any
        number); the item counts in the volume, and once for each watched slot it carries.
        An item of a slot already closed is late: not counted (False). With `advance`
        False (its time is an arrival time standing in for an untrusted timestamp) the item
        is counted but does not move the key's clock, so it closes nothing. A `watermark`
        (the partition's, held back by its slowest source) caps how far the key's own clock
        may close its windows.
        """
        slot = self.slot_of(ts)
        counted = state["last"] is None or slot > state["last"]
        if counted:
            entry = state["open"].setdefault(str(slot), {"counts": {}, "samples": {}})
            entry["volume"] = _volume(entry) + 1
            for name in dict.fromkeys([slots] if isinstance(slots, str) else slots):
                if name in self.watched:
                    entry["counts"][name] = entry["counts"].get(name, 0) + 1
                    samples = entry["samples"].setdefault(name, [])
                    if len(samples) < self.settings.samples:
                        samples.append(item_id)
            state["model_version"] = model_version
        if not advance:
            return [], counted
        state["max_ts"] = ts if state["max_ts"] is None else max(state["max_ts"], ts)
        clock = state["max_ts"] if watermark is None else min(state["max_ts"], watermark)
        return self.close_if_before(state, key, clock - self.grace_s), counted

    def newest_time(self, state: dict[str, Any]) -> float | None:
        """The event time of the key's newest item, as far as its state tells (None: empty).

        The newest trusted item, or the start of the newest slot: an item counted at its
        arrival time is in a slot but not in `max_ts`, and must keep the key alive too.
        """
        times = [int(slot) * self.hop_s for slot in state["open"]]
        if state["max_ts"] is not None:
            times.append(state["max_ts"])
        if state["last"] is not None:
            times.append(state["last"] * self.hop_s)
        return max(times, default=None)

    def close_if_before(
        self, state: dict[str, Any], key: str, watermark: float
    ) -> list[WindowResult]:
        """Close, in order, every open slot that ended at or before `watermark` (event time)."""
        results = []
        for slot in sorted(int(k) for k in state["open"]):
            if (slot + 1) * self.hop_s > watermark:
                break
            results.append(self.close(state, key, slot))
        return results

    def close(self, state: dict[str, Any], key: str, slot: int) -> WindowResult:
        """Score the window ending with `slot`, update the baseline, forget the slot."""
        s = self.settings
        entry = state["open"].pop(str(slot))
        # Slots that were skipped (no items) are empty, so older ones fall out of the window.
        history = [h for h in state["history"] if h["slot"] > slot - s.hops]
        current = {
            "slot": slot,
            "counts": entry["counts"],
            "samples": entry["samples"],
            "volume": _volume(entry),
        }
        window = [*history, current]
        volume = sum(_volume(h) for h in window)
        scores: dict[WatchPair, float] = {}
        alerts: list[Alert] = []
        warm = s.warmup_windows * s.hops
        for pair in s.watch:
            if volume < s.min_volume:
                continue
            name = pair.slot
            share = sum(h["counts"].get(name, 0) for h in window) / volume
            value = stabilized(share)
            base = state["baseline"].get(name)
            if base is None:
                state["baseline"][name] = {"mean": value, "var": 0.0, "n": 1}
                continue
            # Never below the binomial noise of `volume` items: early baselines
            # underestimate their variance, and small windows are noisy by nature.
            sampling = 1 / (2 * math.sqrt(volume))
            deviation = max(math.sqrt(base["var"]), sampling, s.min_deviation)
            score = (value - base["mean"]) / deviation
            if base["n"] >= warm:  # before that the baseline is not worth a score
                scores[pair] = score
                if score >= s.threshold and slot > state["cooldown_until"]:
                    samples = [i for h in window for i in h["samples"].get(name, [])]
                    alerts.append(
                        Alert(
                            id=alert_id(key, name, slot),
                            key=key,
                            pair=pair,
                            window_start=(slot + 1 - s.hops) * self.hop_s,
                            window_end=(slot + 1) * self.hop_s,
                            share=share,
                            baseline=math.sin(base["mean"]) ** 2,
                            score=score,
                            severity="critical" if score >= s.critical else "warning",
                            volume=volume,
                            sample_ids=tuple(samples[-s.samples :]),
                            model_version=state["model_version"],
                        )
                    )
            # Huber-style: what enters the baseline is clipped to 2 deviations either way, so
            # a spike (alerted or not) cannot become the new normal or inflate the deviation.
            value = min(max(value, base["mean"] - 2 * deviation), base["mean"] + 2 * deviation)
            delta = value - base["mean"]
            base["mean"] += s.alpha * delta
            base["var"] = (1 - s.alpha) * (base["var"] + s.alpha * delta * delta)
            base["n"] += 1
        if alerts:
            state["cooldown_until"] = slot + s.cooldown_windows * s.hops
        state["history"] = [h for h in window if h["slot"] > slot + 1 - s.hops]
        state["last"] = slot
        return WindowResult(key, slot, volume, scores, tuple(alerts))


def _volume(slot: dict[str, Any]) -> int:
    """A slot's item count. One from before the pairs were configurable has no "volume":
    its counts then hold every sentiment class, so they sum to it."""
    volume = slot.get("volume")
    return int(volume) if volume is not None else sum(slot["counts"].values())


def item_keys(doc: dict[str, Any], meta_fields: Sequence[str]) -> list[str]:
    """The alert keys a labeled item counts towards: its source, its topic, chosen meta fields.

    A value longer than MAX_KEY_CHARS is no key: keys live in the state table and in
    metric labels, and a producer must not be able to make either hold megabyte strings.
    """
    keys: list[str] = []
    source = doc.get("source")
    if isinstance(source, str) and 0 < len(source) <= MAX_KEY_CHARS:
        keys.append(f"source:{source}")
    topic = doc.get("labels", {}).get("topic", {}).get("label")
    if isinstance(topic, str) and len(topic) <= MAX_KEY_CHARS:
        keys.append(f"topic:{topic}")
    meta = doc.get("meta")
    if isinstance(meta, dict):
        for name in meta_fields:
            value = meta.get(name)
            values = value if isinstance(value, list) else [value]
            for v in values[:10]:
                if isinstance(v, (str, int)) and not isinstance(v, bool):
                    text = str(v) if isinstance(v, str) or abs(v) < 10**20 else ""
                    if 0 < len(text) <= MAX_KEY_CHARS:
                        keys.append(f"{name}:{text}")
    return keys
