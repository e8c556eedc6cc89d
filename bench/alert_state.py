"""Alert-state memory after N distinct keys, with idle-key eviction on and off.

The alert app's handlers run in process: a dict stands in for the faust table and list
topics for the others, keyed sends are handed straight to `detect`, and a tick goes out
every 1,000 items. Each item carries a new hashtag (a new key), event time 0.1 s apart.
Prints one JSON line: per mode, the keys held and the state's bytes by tracemalloc (what
a fresh copy of the table allocates), plus everything still allocated since the start
(metric label candidates included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faust.types import Message  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from streams.alerts.app import _AlertHandlers, _Topics, spike_settings  # noqa: E402
from streams.alerts.spike_detector import SpikeDetector  # noqa: E402
from streams.metrics import AlertMetrics, KeyLabels  # noqa: E402
from streams.settings import Settings  # noqa: E402

START_TS = 1_700_000_000.0


class ListTopic:
    """Keeps what is sent (the part of faust's `send` the handlers use)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, int | None]] = []

    async def send(
        self, *, key: bytes | None = None, value: bytes | None = None, **kw: Any
    ) -> None:
        self.sent.append((key, value, kw.get("partition")))


def message(topic: str, value: bytes | None, key: bytes | None, partition: int) -> Message:
    return Message(topic, partition, 0, time.time(), 0, [], key, value, None)


async def run(settings: Settings, keys: int) -> dict[str, Any]:
    state: dict[str, Any] = {}
    keyed, alerts, dlq = ListTopic(), ListTopic(), ListTopic()
    metrics = AlertMetrics(CollectorRegistry(), KeyLabels(settings.alert_metric_keys))
    detector = SpikeDetector(spike_settings(settings), grace_s=settings.alert_grace_s)
    topics = _Topics(keyed, alerts, dlq)  # type: ignore[arg-type]
    handlers = _AlertHandlers(settings, detector, metrics, topics, state)

    async def drain() -> None:
        pending, keyed.sent = keyed.sent, []
        for key, value, partition in pending:
            if partition is None:
                partition = zlib.crc32(key or b"") % settings.topic_partitions
            await handlers.detect(message("keyed", value, key, partition))

    gc.collect()
    tracemalloc.start()
    sentiments = ("negative", "neutral", "positive")
    started = time.perf_counter()
    for i in range(keys):
        doc = {
            "id": f"r{i}",
            "labels": {"sentiment": {"label": sentiments[i % 3]}},
            "input": {"timestamp_ms": int((START_TS + i * 0.1) * 1000)},
            "meta": {"hashtag": f"h{i}"},
        }
        await handlers.fan_out(message("labeled", json.dumps(doc).encode(), None, 0))
        await drain()
        if i % 1000 == 999:
            await handlers.tick()
            await drain()
    elapsed = time.perf_counter() - started
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    blob = pickle.dumps((state, handlers.checked, handlers.watermarks))
    tracemalloc.start()
    copy = pickle.loads(blob)
    state_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del copy
    return {
        "keys_held": len(state),
        "state_bytes": state_bytes,
        "traced_bytes": traced,
        "evicted": int(metrics.keys_evicted._value.get()),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--idle-windows", type=int, default=10)
    args = parser.parse_args()
    base: dict[str, Any] = {
        "alert_window_s": 10.0,
        "alert_grace_s": 3.0,
        "alert_key_fields": ["hashtag"],
        "topic_partitions": 2,
    }
    on = Settings(**base, alert_idle_windows=args.idle_windows)
    off = Settings(**base, alert_idle_windows=10**9)
    result = {
        "keys": args.keys,
        "window_s": on.alert_window_s,
        "idle_windows": on.alert_idle_windows,
        "eviction_on": asyncio.run(run(on, args.keys)),
        "eviction_off": asyncio.run(run(off, args.keys)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
