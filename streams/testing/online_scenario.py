"""The online-learning scenario, end to end on a real broker: a stream of one domain with
feedback, then a switch to another; the classify worker, the model watch and the trainer
run as their own processes. What the benchmark reports and the shortened test asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.child_process import spawn, terminate
from streams.classify.processes import worker_env
from streams.classify.rebalance import READY_MARKER as WORKER_READY
from streams.kafka.tail import read_topics
from streams.learning.trainer_worker import READY_MARKER as TRAINER_READY
from streams.learning.watch_worker import READY_MARKER as WATCH_READY
from streams.settings import Settings
from streams.testing.feedback_replay import Phase, replay_with_feedback


@dataclass
class ScenarioLog:
    """What the monitor saw, with wall-clock times."""

    drift: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    jobs: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    decisions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    # First time each model version stamped a labeled output.
    versions: dict[str, float] = field(default_factory=dict)
    labeled: int = 0


@dataclass
class ScenarioResult:
    """The scenario's figures."""

    spans: dict[str, tuple[int, int]]
    switch_at: float
    log: ScenarioLog
    promoted_version: int | None
    seconds_to_promotion: float | None
    detection_delay_items: int | None
    false_alarms: int

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "spans": self.spans,
            "drift_events": [e for _, e in self.log.drift],
            "decisions": [d for _, d in self.log.decisions],
            "promoted_version": self.promoted_version,
            "seconds_switch_to_promotion": self.seconds_to_promotion,
            "detection_delay_items": self.detection_delay_items,
            "false_alarms_before_switch": self.false_alarms,
        }


@contextlib.contextmanager
def online_processes(settings: Settings, log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A classify worker, the model watch and the trainer as processes, ready to consume."""
    env = worker_env(settings)
    procs: list[subprocess.Popen[bytes]] = []
    markers = {"worker": WORKER_READY, "watch": WATCH_READY, "trainer": TRAINER_READY}
    try:
        for command in markers:
            log = log_dir / f"{command}.log"
            procs.append(spawn([sys.executable, "-m", "streams", command], log, env))
        deadline = time.monotonic() + 90
        for (command, marker), proc in zip(markers.items(), procs, strict=True):
            log = log_dir / f"{command}.log"
            while marker not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{command} did not become ready:\n{tail}")
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            terminate(proc, timeout_s=30)


async def monitor(settings: Settings, log: ScenarioLog, stop: asyncio.Event) -> None:
    """Record drift events, jobs, decisions and labeled versions as they appear."""
    s = settings
    topics = [s.drift_topic, s.jobs_topic, s.decisions_topic, s.output_topic]
    async for rec in read_topics(s, topics, yield_idle=True):
        if stop.is_set():
            return
        if rec is None:
            continue
        now = time.time()
        doc = json.loads(rec.value)
        if rec.topic == s.drift_topic:
            log.drift.append((now, doc))
        elif rec.topic == s.jobs_topic:
            doc.pop("rows_gzip_b64", None)
            log.jobs.append((now, doc))
        elif rec.topic == s.decisions_topic:
            log.decisions.append((now, doc))
        else:
            log.labeled += 1
            log.versions.setdefault(str(doc["model"]["version"]), now)


async def run_scenario(
    settings: Settings,
    before: Sequence[tuple[str, str]],
    after: Sequence[tuple[str, str]],
    *,
    lag: int = 20,
    rate: float = 0.0,
    trickle_rate: float = 10.0,
    timeout_s: float = 1800.0,
    progress: Any = None,
) -> ScenarioResult:
    """Stream `before` then `after` (text, gold label) with feedback; wait until a decision
    on a job and, if it promoted, until the new version labels the stream.
    """
    log = ScenarioLog()
    stop = asyncio.Event()
    watcher = asyncio.create_task(monitor(settings, log, stop))
    spans: dict[str, tuple[int, int]] = {}
    position = 0

    async def send(name: str, rows: Sequence[tuple[str, str]], pace: float) -> None:
        nonlocal position
        await replay_with_feedback(
            settings, [Phase(name, rows)], lag=lag, rate=pace, on_sent=progress
        )
        spans[name] = (position, position + len(rows))
        position += len(rows)

    await send("before", before, rate)
    switch_at = time.time()
    deadline = time.monotonic() + timeout_s
    await send("after", after, rate)
    # The new domain keeps flowing (cycled) until a job is queued, then trickles on while
    # the trainer works, as a live feed would.
    chunk = max(1, int(trickle_rate * 5))
    round_ = 0
    while not log.jobs and time.monotonic() < deadline:
        round_ += 1
        await send(f"after{round_}", after, rate)
    promoted: int | None = None
    cursor = 0
    while time.monotonic() < deadline:
        if log.decisions:
            decision = log.decisions[-1][1]
            if decision["action"] != "promoted":
                break
            promoted = int(decision["candidate_version"])
            if str(promoted) in log.versions:
                break
        rows = [after[(cursor + i) % len(after)] for i in range(chunk)]
        cursor += chunk
        round_ += 1
        await send(f"trickle{round_}", rows, trickle_rate)
    stop.set()
    await asyncio.sleep(0.5)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    before_end = spans["before"][1]
    switch_events = [e for _, e in log.drift if e["items_seen"] > before_end]
    seen_at = log.versions.get(str(promoted)) if promoted is not None else None
    return ScenarioResult(
        spans=spans,
        switch_at=switch_at,
        log=log,
        promoted_version=promoted,
        seconds_to_promotion=round(seen_at - switch_at, 1) if seen_at else None,
        detection_delay_items=(
            min(e["items_seen"] for e in switch_events) - before_end if switch_events else None
        ),
        false_alarms=sum(1 for _, e in log.drift if e["items_seen"] <= before_end),
    )
