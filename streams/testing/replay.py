"""Replays of labeled tweets spread over keys, with injected negative bursts: the stream the
alert tests and the detector benchmark run on.

Items carry the tweets' gold sentiment as their label (what a perfect classifier would
publish) and event times on a fixed schedule, so a replay is exact however fast it is
published.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Burst:
    """From window `start` for `windows` windows, key `key` gets `share` negative items."""

    key: str
    start: int
    windows: int = 1
    share: float = 0.8


def read_tweets(path: Path) -> list[tuple[str, str]]:
    """(text, gold sentiment) rows of a `{"text", "label"}` JSONL file."""
    with path.open(encoding="utf-8") as fh:
        return [(row["text"], row["label"]) for row in map(json.loads, fh)]


def labeled_doc(item_id: str, text: str, sentiment: str, key: str, ts: float) -> dict[str, Any]:
    """A `feeds.labeled` document as the classify worker writes it (the fields alerts read)."""
    name, _, value = key.partition(":")
    return {
        "id": item_id,
        "source": None,  # keys come from meta only, so a burst has one place to show
        "text": text,
        "labels": {"sentiment": {"label": sentiment, "score": 1.0}},
        "model": {"name": "replay", "version": "gold", "variant": "none"},
        "input": {"timestamp_ms": int(ts * 1000)},
        "meta": {name: value},
    }


def replay(
    tweets: Sequence[tuple[str, str]],
    keys: Sequence[str],
    *,
    windows: int,
    per_window: int,
    window_s: float,
    bursts: Sequence[Burst] = (),
    start_ts: float = 1_700_000_000.0,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """`per_window` items per key per window, in event-time order, bursts injected.

    Tweets are drawn in a seeded order without replacement (cycling if the stream is
    longer than the data); inside a burst, negative tweets replace the share asked for.
    """
    rng = random.Random(seed)
    order = list(range(len(tweets)))
    rng.shuffle(order)
    negatives = [i for i in order if tweets[i][1] == "negative"]
    cursor = 0
    neg_cursor = 0
    n = 0
    for window in range(windows):
        active = {b.key: b.share for b in bursts if b.start <= window < b.start + b.windows}
        slots = [(key, i) for key in keys for i in range(per_window)]
        rng.shuffle(slots)
        for slot, (key, _) in enumerate(slots):
            if key in active and rng.random() < active[key]:
                index = negatives[neg_cursor % len(negatives)]
                neg_cursor += 1
            else:
                index = order[cursor % len(order)]
                cursor += 1
            text, sentiment = tweets[index]
            ts = start_ts + window * window_s + window_s * slot / len(slots)
            yield labeled_doc(f"r{n}", text, sentiment, key, ts)
            n += 1
