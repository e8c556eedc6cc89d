"""Spike detector quality over a long seeded replay: recall of injected negative bursts,
false alarms per 10,000 key-windows and per hour of stream, and detection delay.

The stream is TweetEval test tweets (their gold sentiment, drawn with replacement) spread
over keys at a fixed rate; bursts start at random times (not on window edges) on random
keys and replace a share of that key's items with negative tweets. The detector is the
one the alert workers run, with the default settings unless overridden.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.alerts.app import spike_settings  # noqa: E402
from streams.alerts.spike_detector import SpikeDetector, SpikeSettings, new_state  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.testing.replay import read_tweets  # noqa: E402


@dataclass(frozen=True)
class Burst:
    key: int
    start: float
    end: float
    share: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--windows", type=int, default=600, help="windows of stream per key")
    parser.add_argument("--per-window", type=int, default=40, help="items per key per window")
    parser.add_argument("--bursts", type=int, default=60)
    parser.add_argument("--burst-share", type=float, nargs=2, default=(0.7, 0.9))
    parser.add_argument("--burst-windows", type=float, nargs=2, default=(1.0, 3.0))
    parser.add_argument("--seed", type=int, default=7, help="first seed")
    parser.add_argument("--runs", type=int, default=5, help="seeded runs, pooled")
    args = parser.parse_args()

    settings = load_settings()
    spike = spike_settings(settings)
    tweets = read_tweets(settings.data_dir / "tweeteval_sentiment" / "test.jsonl")
    runs = [run(args, spike, tweets, args.seed + i) for i in range(args.runs)]
    window = spike.window_s
    bursts = sum(r["bursts"] for r in runs)
    detected = sum(r["detected"] for r in runs)
    false_alarms = sum(r["false_alarms"] for r in runs)
    quiet_windows = sum(r["quiet_windows"] for r in runs)
    hours = args.runs * args.windows * window / 3600
    delays = sorted(d for r in runs for d in r["delays"])
    report = {
        "runs": args.runs,
        "items": sum(r["items"] for r in runs),
        "keys": args.keys,
        "window_s": window,
        "hops": spike.hops,
        "key_windows": args.runs * args.keys * args.windows,
        "stream_hours": round(hours, 2),
        "bursts": bursts,
        "burst_share_range": list(args.burst_share),
        "burst_windows_range": list(args.burst_windows),
        "recall": round(detected / bursts, 4),
        "recall_per_run": [round(r["detected"] / r["bursts"], 3) for r in runs],
        "false_alarms": false_alarms,
        "false_alarms_per_10k_windows": round(false_alarms / quiet_windows * 10_000, 2),
        "false_alarms_per_hour": round(false_alarms / hours, 3),
        "median_delay_windows": round(statistics.median(delays) / window, 3),
        "p90_delay_windows": round(delays[int(0.9 * (len(delays) - 1))] / window, 3),
        "settings": {
            "threshold": spike.threshold,
            "min_volume": spike.min_volume,
            "warmup_windows": spike.warmup_windows,
            "cooldown_windows": spike.cooldown_windows,
            "per_window": args.per_window,
        },
    }
    print(json.dumps(report))


def run(
    args: argparse.Namespace, spike: SpikeSettings, tweets: list[tuple[str, str]], seed: int
) -> dict[str, Any]:
    """One seeded stream: bursts, detections, false alarms, delays (seconds)."""
    window = spike.window_s
    rng = random.Random(seed)
    duration = args.windows * window
    bursts = draw_bursts(args, spike, rng, duration)
    alerts, items = replay(args, spike, tweets, rng, bursts, duration)
    detected, false_alarms = match_alerts(alerts, bursts, window)
    burst_windows = sum(int(b.end // window) - int(b.start // window) + 2 for b in bursts)
    for i, b in enumerate(bursts):
        if i not in detected:
            length = (b.end - b.start) / window
            print(f"seed {seed} missed: share {b.share:.2f}, {length:.1f} windows", file=sys.stderr)
    return {
        "items": items,
        "bursts": len(bursts),
        "detected": len(detected),
        "false_alarms": false_alarms,
        "quiet_windows": args.keys * args.windows - burst_windows,
        "delays": list(detected.values()),
    }


def draw_bursts(
    args: argparse.Namespace, spike: SpikeSettings, rng: random.Random, duration: float
) -> list[Burst]:
    """`args.bursts` random bursts over the stream, those on one key kept apart."""
    window = spike.window_s
    bursts: list[Burst] = []
    # Bursts on one key stay apart by the warm-up plus cool-down: closer ones are one spike.
    gap = (spike.warmup_windows + spike.cooldown_windows + 1) * window
    while len(bursts) < args.bursts:
        length = rng.uniform(*args.burst_windows) * window
        start = rng.uniform(10 * window, duration - length - 2 * window)
        key = rng.randrange(args.keys)
        apart = all(
            b.key != key or start > b.end + gap or start + length + gap < b.start for b in bursts
        )
        if apart:
            bursts.append(Burst(key, start, start + length, rng.uniform(*args.burst_share)))
    return bursts


def replay(
    args: argparse.Namespace,
    spike: SpikeSettings,
    tweets: list[tuple[str, str]],
    rng: random.Random,
    bursts: list[Burst],
    duration: float,
) -> tuple[list[tuple[int, float]], int]:
    """Stream every key through the detector: its alerts as (key, alert time), and the items."""
    window = spike.window_s
    detector = SpikeDetector(spike)
    alerts: list[tuple[int, float]] = []  # (key, alert time = end of the window it closed)
    items = 0
    for key in range(args.keys):
        state = new_state()
        mine = [b for b in bursts if b.key == key]
        times = sorted(rng.uniform(0, duration) for _ in range(args.windows * args.per_window))
        for t in times:
            burst = next((b for b in mine if b.start <= t < b.end), None)
            if burst is not None and rng.random() < burst.share:
                sentiment = "negative"
            else:
                # Drawn with replacement: cycling one fixed order would repeat its chance
                # clusters of one sentiment on every pass.
                sentiment = tweets[rng.randrange(len(tweets))][1]
            closed, _ = detector.add(state, f"k{key}", t, sentiment, f"{key}-{items}", "bench")
            items += 1
            for result in closed:
                alerts.extend((key, a.window_end) for a in result.alerts)
        for result in detector.close_if_before(state, f"k{key}", duration + window):
            alerts.extend((key, a.window_end) for a in result.alerts)
    return alerts, items


def match_alerts(
    alerts: list[tuple[int, float]], bursts: list[Burst], window: float
) -> tuple[dict[int, float], int]:
    """The detection delay of each detected burst (by index), and the false alarm count."""
    # An alert belongs to a burst if it is on the burst's key and fires between the burst's
    # start and one window after its end; every other alert is a false alarm.
    detected: dict[int, float] = {}
    false_alarms = 0
    for key, at in alerts:
        hit = [i for i, b in enumerate(bursts) if b.key == key and b.start < at <= b.end + window]
        if hit:
            for i in hit:
                detected.setdefault(i, at - bursts[i].start)
        else:
            false_alarms += 1
    return detected, false_alarms


if __name__ == "__main__":
    main()
