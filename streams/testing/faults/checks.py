"""What the campaign checks after the stream: every input accounted for, no dead letter
from an outage, duplicates charged to faults, versions served when stamped, bursts alerted."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers
from streams.settings import Settings
from streams.testing.audit import Audit
from streams.testing.faults.schedule import Fault
from streams.testing.faults.stream import BurstWindow, Position


@dataclass
class Copy:
    """One output or dead letter of an input position."""

    at: float
    worker_pid: int | None


def copy_of(rec: Any, settings: Settings) -> tuple[Position, Copy] | None:
    """The input position an output record accounts for, with when and by whom (None for
    a dead letter of another topic)."""
    if rec.topic == settings.dlq_topic:
        headers = decode_headers(rec.headers)
        if headers.get(DLQ_HEADER_PREFIX + "source.topic") != settings.input_topic:
            return None
        pos = (
            int(headers[DLQ_HEADER_PREFIX + "source.partition"]),
            int(headers[DLQ_HEADER_PREFIX + "source.offset"]),
        )
        return pos, Copy(rec.timestamp / 1000, None)
    doc = json.loads(rec.value)
    worker_pid = int(doc["worker"].rsplit("-", 2)[1])  # "<host>-<pid>-<hex>"
    return (doc["input"]["partition"], doc["input"]["offset"]), Copy(
        rec.timestamp / 1000, worker_pid
    )


def attribute(
    copies: dict[Position, list[Copy]],
    faults: Sequence[Fault],
    unexplained: Callable[[Position, Copy, Copy], None] | None = None,
) -> int:
    """Charge every extra copy to a fault; returns the copies no fault explains (each also
    handed to `unexplained` with its first copy, so a failed campaign says which).

    The killed (or departed) worker that produced the first copy, if there is one; else
    the latest fault injected before the repeat whose effects lasted until the first copy
    (a fault that started a worker lasts until that worker owns partitions: its join
    rebalances the group).
    """
    by_victim = {f.victim_pid: f for f in faults if f.victim_pid is not None}
    unattributed = 0
    for position, seen in copies.items():
        if len(seen) < 2:
            continue
        seen = sorted(seen, key=lambda c: c.at)
        first = seen[0]
        for again in seen[1:]:
            pid = first.worker_pid
            fault = by_victim.get(pid) if pid is not None else None
            if fault is None:
                window = [f for f in faults if f.at <= again.at and _until(f) >= first.at - 1.0]
                fault = window[-1] if window else None
            if fault is None:
                unattributed += 1
                if unexplained is not None:
                    unexplained(position, first, again)
            else:
                fault.duplicates += 1
    return unattributed


def _until(fault: Fault) -> float:
    """When a fault's effects end, as far as the campaign knows."""
    return fault.at if fault.settled_at is None else max(fault.at, fault.settled_at)


def wrong_outcomes(
    audit: Audit, positions: Sequence[Position], outcomes: Sequence[str | None]
) -> list[str]:
    """Inputs that did not end as they must: valid ones labeled, invalid ones
    dead-lettered for their own reason (never for a server's absence)."""
    wrong: list[str] = []
    for pos, reason in zip(positions, outcomes, strict=True):
        if reason is None and pos not in audit.labeled_at:
            wrong.append(f"{pos}: valid but {audit.reasons_at.get(pos, 'lost')}")
        elif reason is not None and audit.reasons_at.get(pos) != reason:
            wrong.append(f"{pos}: expected {reason}, got {audit.reasons_at.get(pos, 'lost')}")
    return wrong


class VersionTimeline:
    """The served version over time, sampled from the model repository."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.versions: list[int | None] = []

    def sample(self, at: float, version: int | None) -> None:
        """Record the version served at `at` (only changes are kept)."""
        if not self.versions or self.versions[-1] != version:
            self.times.append(at)
            self.versions.append(version)

    def served_within(self, version: int, at: float, slack_s: float) -> bool:
        """Whether `version` was the served one at some moment of [at - slack_s, at]."""
        lo = bisect.bisect_right(self.times, at - slack_s) - 1
        hi = bisect.bisect_right(self.times, at)
        return version in self.versions[max(lo, 0) : max(hi, 1)]

    def changes(self) -> list[tuple[float, int | None]]:
        """Every change, in order."""
        return list(zip(self.times, self.versions, strict=True))


def stale_versions(
    stamps: Sequence[tuple[float, int]], timeline: VersionTimeline, slack_s: float
) -> list[tuple[float, int]]:
    """Outputs (classified at, version) whose version was not served within `slack_s`."""
    return [(t, v) for t, v in stamps if not timeline.served_within(v, t, slack_s)]


def bursts_alerted(
    bursts: Sequence[BurstWindow], alerts: Sequence[dict[str, Any]], window_s: float
) -> tuple[list[BurstWindow], list[dict[str, Any]]]:
    """The bursts no alert answered, and the alerts no burst explains (de-duplicated by id).

    An alert answers a burst on its key whose span overlaps the alert's window.
    """
    unique = {a["id"]: a for a in alerts if a.get("sentiment") == "negative"}
    missed = []
    explained: set[str] = set()
    for burst in bursts:
        hits = [
            a
            for a in unique.values()
            if a["key"] == burst.key
            and a["window"]["start"] <= burst.end
            and a["window"]["end"] >= burst.start
        ]
        explained.update(a["id"] for a in hits)
        if not hits:
            missed.append(burst)
    spurious = [a for a in unique.values() if a["id"] not in explained]
    return missed, spurious


def alert_item(doc: dict[str, Any]) -> tuple[float, str, str] | None:
    """(event time, alert key, sentiment) of a labeled document of the campaign's stream."""
    ticker = doc.get("meta", {}).get("ticker")
    if ticker is None:
        return None
    return (
        doc["input"]["timestamp_ms"] / 1000,
        f"ticker:{ticker}",
        doc["labels"]["sentiment"]["label"],
    )


def burst_shares(
    burst: BurstWindow, labeled: Sequence[tuple[float, str, str]], before_s: float = 30.0
) -> str:
    """How the outputs labeled `burst`'s key: the negative share and volume during the burst
    and in the `before_s` before it (event time), so a missed burst says whether the model
    or the detector let it through."""

    def share(start: float, end: float) -> str:
        mine = [s for ts, key, s in labeled if key == burst.key and start <= ts < end]
        negative = sum(s == "negative" for s in mine)
        return f"{negative / len(mine):.2f} of {len(mine)}" if mine else "none"

    during = share(burst.start, burst.end)
    return f"negative {during} during, {share(burst.start - before_s, burst.start)} before"


def duplicates_by_kind(faults: Sequence[Fault]) -> dict[str, int]:
    """Duplicates attributed to each fault kind."""
    out: dict[str, int] = defaultdict(int)
    for f in faults:
        out[f.kind] += f.duplicates
    return dict(out)
