"""Event-time watermarks of the keyed topic's partitions, held back by the slowest source.

A keyed partition gets items classified from every input partition. Those are consumed by
different workers at different paces: when one input partition stalls (its worker killed,
its replacement still catching up), its items reach the alert worker seconds late. Taking
the newest time seen as the watermark would close windows on the other partitions' time
and turn every one of the stalled partition's items into a late one, the burst it carries
included. So each keyed partition keeps the newest event time per source (input topic and
partition) and its watermark is the oldest of those, over the sources heard from within
`idle_s`: a source that went quiet (no traffic, or a stall longer than that) stops holding
the windows back. A watermark never moves backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Sources tracked per partition at most: the labeled documents name them, and a producer
# must not be able to grow this without bound. The least recently heard one makes room.
MAX_SOURCES = 1024


@dataclass
class _Source:
    ts: float  # newest event time seen from the source
    seen: float  # when it was last heard from (the worker's clock)


class SourceWatermarks:
    """Watermark per keyed partition: the slowest live source's newest event time."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.time) -> None:
        self.idle_s = idle_s
        self.clock = clock
        self.sources: dict[int, dict[str, _Source]] = {}
        # The current watermark per partition (Unix seconds): what ticks close windows on.
        self.values: dict[int, float] = {}

    def observe(self, partition: int, source: str, ts: float) -> float:
        """Note an item of `source` at event time `ts`; the partition's watermark after it."""
        now = self.clock()
        sources = self.sources.setdefault(partition, {})
        known = sources.get(source)
        if known is None:
            if len(sources) >= MAX_SOURCES:
                del sources[min(sources, key=lambda name: sources[name].seen)]
            sources[source] = _Source(ts, now)
        else:
            known.ts, known.seen = max(known.ts, ts), now
        mark = self.current(partition)
        assert mark is not None  # the source just seen is there
        return mark

    def current(self, partition: int) -> float | None:
        """The partition's watermark now (None before its first item)."""
        sources = self.sources.get(partition)
        if not sources:
            return None
        now = self.clock()
        live = [s.ts for s in sources.values() if now - s.seen <= self.idle_s]
        # Nothing heard from lately: the whole stream went quiet, and what was seen is all
        # there is, so the newest time closes the windows.
        mark = min(live) if live else max(s.ts for s in sources.values())
        mark = max(mark, self.values.get(partition, mark))
        self.values[partition] = mark
        return mark

    def lowest(self) -> float | None:
        """The lowest watermark over the partitions (for the metric)."""
        return min(self.values.values(), default=None)
