"""Fault injection under a steady stream: workers, Triton and the broker fail at random.

Two classify workers (`--backend triton`) and a local Triton consume a paced stream of
TweetEval test tweets, with an invalid message every BAD_EVERY, while a seeded schedule
injects faults one after another: `kill -9` of a random worker (a replacement starts at
once, so the kill lands anywhere in the victim's fetch / classify / produce / commit
cycle), `kill -9` of Triton (restarted 2-4 s later) and SIGSTOP of the broker for 1-3 s.
Then publishing stops, the workers drain, and every input must be on the output or the
dead-letter topic. Each duplicate is attributed to the fault that let it happen, and the
figures are printed (run with `-s`). FEEDPULSE_FAULT_SEED picks another schedule.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serving.triton.server import TritonServer
from streams import messages as m
from streams.classify.processes import WorkerProcesses
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import Record, publish
from streams.kafka.records import DLQ_HEADER_PREFIX, decode_headers
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import Audit, Position, audit_outputs
from tests.conftest import SHARED_DATA, new_triton

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("FEEDPULSE_FAULT_SEED", "20261124"))
RATE = 100  # messages/s offered during the whole schedule
BAD_EVERY = 40
FAULTS = {"worker": 8, "triton": 5, "broker": 8}
GAP_S = (0.5, 2.5)  # quiet time before each fault
TRITON_DOWN_S = (2.0, 4.0)
BROKER_STOPPED_S = (1.0, 3.0)
KIND_NAMES = {"worker": "worker kill -9", "triton": "Triton kill -9", "broker": "broker SIGSTOP"}

BAD_INPUTS: list[tuple[Callable[[str], bytes], str]] = [
    (lambda i: f'{{"id": "{i}", "text": "cut'.encode(), m.INVALID_JSON),
    (lambda i: json.dumps({"id": i, "text": 12}).encode(), m.TEXT_NOT_STRING),
    (lambda i: json.dumps({"id": i, "text": "   "}).encode(), m.EMPTY_TEXT),
    (lambda i: json.dumps({"id": i, "title": "no text"}).encode(), m.MISSING_TEXT),
    (lambda i: b"\xff\xfe " + i.encode(), m.UNDECODABLE_BYTES),
    (lambda i: b"[1, 2]", m.NOT_AN_OBJECT),
]


def tweets() -> list[str]:
    with (SHARED_DATA / "tweeteval_sentiment" / "test.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def stream(texts: list[str], stop: asyncio.Event, outcomes: list[str | None]) -> Iterator[Record]:
    """Tweets with an invalid message every BAD_EVERY until `stop`; `outcomes` gets, per
    record, None (must be labeled) or the reason it must be dead-lettered with."""
    for n in itertools.count():
        if stop.is_set():
            return
        item_id = f"f-{n}"
        if n % BAD_EVERY == BAD_EVERY - 1:
            make, reason = BAD_INPUTS[(n // BAD_EVERY) % len(BAD_INPUTS)]
            value: bytes = make(item_id)
            outcomes.append(reason)
        else:
            doc = {"id": item_id, "text": texts[n % len(texts)], "source": "tweeteval"}
            value = json.dumps(doc).encode()
            outcomes.append(None)
        yield item_id.encode(), value


@dataclass
class Fault:
    kind: str
    at: float  # wall clock (time.time), comparable to output record timestamps
    detail: str
    victim_pid: int | None = None
    duplicates: int = 0


@dataclass
class Copy:
    """One output or dead letter of an input position."""

    at: float
    worker_pid: int | None


class Injector:
    """Runs the seeded fault schedule against workers, Triton and the broker."""

    def __init__(
        self,
        rng: random.Random,
        workers: WorkerProcesses,
        server: TritonServer,
        broker: EmbeddedBroker,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.rng = rng
        self.workers = workers
        self.server = server
        self.broker = broker
        # Triton is started from this one long-lived thread: the server gets SIGTERM when
        # the thread that spawned it ends, and a blocking start must not stall the stream.
        self.pool = pool
        self.faults: list[Fault] = []
        self.killed: set[int] = set()

    def check_workers(self) -> None:
        """Every worker not killed here must still run."""
        for n, proc in enumerate(self.workers.procs):
            if proc.pid not in self.killed and proc.poll() is not None:
                log = self.workers.log_path(n).read_text(errors="replace")
                pytest.fail(f"worker {n} exited by itself ({proc.returncode}):\n{log[-3000:]}")

    async def run(self) -> None:
        kinds = [kind for kind, n in FAULTS.items() for _ in range(n)]
        self.rng.shuffle(kinds)
        for kind in kinds:
            await asyncio.sleep(self.rng.uniform(*GAP_S))
            self.check_workers()
            await getattr(self, f"_{kind}")()

    async def _worker(self) -> None:
        # Kill a worker that is in its batch cycle, not a replacement still joining: both
        # live workers own partitions first (the wait is part of the quiet time).
        live = [n for n, p in enumerate(self.workers.procs) if p.pid not in self.killed]
        await self.workers.wait_ready(timeout_s=60, only=live)
        await asyncio.sleep(self.rng.uniform(0, 1))
        victim = self.workers.procs[self.rng.choice(live)]
        self.faults.append(Fault("worker", time.time(), f"pid {victim.pid}", victim.pid))
        self.killed.add(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.workers.start(1)

    async def _triton(self) -> None:
        loop = asyncio.get_running_loop()
        down = self.rng.uniform(*TRITON_DOWN_S)
        self.faults.append(Fault("triton", time.time(), f"down {down:.1f}s + restart"))
        await loop.run_in_executor(self.pool, self.server.kill)
        # What an operator does before restarting: reap the dead server's python stubs and
        # shared memory (stop() on a dead server only cleans up).
        await loop.run_in_executor(self.pool, self.server.stop)
        await asyncio.sleep(down)
        await loop.run_in_executor(self.pool, self.server.start)

    async def _broker(self) -> None:
        pid = self.broker.pid
        assert pid is not None
        stopped = self.rng.uniform(*BROKER_STOPPED_S)
        self.faults.append(Fault("broker", time.time(), f"stopped {stopped:.1f}s"))
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stopped)
        finally:
            os.kill(pid, signal.SIGCONT)


def copy_of(rec: Any, settings: Settings) -> tuple[Position, Copy]:
    """The input position an output record accounts for, with when and by whom."""
    if rec.topic == settings.dlq_topic:
        headers = decode_headers(rec.headers)
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


def attribute(copies: dict[Position, list[Copy]], faults: list[Fault]) -> int:
    """Charge every extra copy to a fault; returns the copies no fault explains.

    The killed worker that produced the first copy, if there is one; else the latest fault
    injected between the first copy and the repeat.
    """
    by_victim = {f.victim_pid: f for f in faults if f.victim_pid is not None}
    unattributed = 0
    for seen in copies.values():
        if len(seen) < 2:
            continue
        seen = sorted(seen, key=lambda c: c.at)
        first = seen[0]
        for again in seen[1:]:
            fault = by_victim.get(first.worker_pid)
            if fault is None:
                window = [f for f in faults if first.at - 1.0 <= f.at <= again.at]
                fault = window[-1] if window else None
            if fault is None:
                unattributed += 1
            else:
                fault.duplicates += 1
    return unattributed


def report(
    faults: list[Fault],
    unattributed: int,
    audit: Audit,
    positions: list[Position],
    lost: int,
    started: float,
) -> None:
    print(f"\nfault schedule (seed {SEED}, {RATE} msgs/s offered):")
    for n, f in enumerate(faults, 1):
        print(
            f"  {n:2d}  t+{f.at - started:6.1f}s  {KIND_NAMES[f.kind]:15s}"
            f"  {f.detail:22s}  duplicates {f.duplicates}"
        )
    print(f"\n  {'fault kind':15s} {'count':>5s}  duplicates attributed")
    for kind, name in KIND_NAMES.items():
        mine = [f for f in faults if f.kind == kind]
        print(f"  {name:15s} {len(mine):5d}  {sum(f.duplicates for f in mine)}")
    print(f"  {'unattributed':15s} {'-':>5s}  {unattributed}")
    dup_positions = sum(
        n - 1 for n in (audit.labeled_at + audit.dead_lettered_at).values() if n > 1
    )
    print(
        f"\nfaults {len(faults)} ({', '.join(f'{KIND_NAMES[k]} {n}' for k, n in FAULTS.items())});"
        f" published {len(positions)}, labeled {len(audit.labeled_at)},"
        f" dead-lettered {len(audit.dead_lettered_at)}, lost {lost},"
        f" duplicates {dup_positions}"
    )


def fault_settings(
    settings_factory: Callable[..., Settings], broker: EmbeddedBroker, server: TritonServer
) -> Settings:
    """Workers on the Triton backend with a short Triton timeout and session timeout."""
    return settings_factory(
        broker,
        backend="triton",
        triton_url=server.grpc_url,
        triton_timeout_s=2.0,
        # A killed worker's partitions wait for its session to expire: 6 s, not 10,
        # keeps the schedule short; still above the longest broker stop plus a heartbeat.
        session_timeout_ms=6000,
    )


async def publish_through_faults(
    settings: Settings, injector: Injector, stop: asyncio.Event, outcomes: list[str | None]
) -> list[Position]:
    """Publish the paced stream for as long as the fault schedule runs; the positions."""
    publisher = asyncio.create_task(publish(settings, stream(tweets(), stop, outcomes), rate=RATE))
    try:
        await injector.run()
    finally:
        stop.set()
    return await publisher


async def audit_with_copies(
    settings: Settings, positions: list[Position]
) -> tuple[Audit, defaultdict[Position, list[Copy]]]:
    """Read back the outputs and dead letters of `positions`, with every copy of each."""
    copies: defaultdict[Position, list[Copy]] = defaultdict(list)

    def collect(_: Audit, rec: Any) -> None:
        pos, copy = copy_of(rec, settings)
        copies[pos].append(copy)

    audit = await audit_outputs(
        settings, positions, by="position", timeout_s=180, on_record=collect, settle_s=3
    )
    return audit, copies


def stop_survivors(workers: WorkerProcesses, injector: Injector) -> list[int]:
    """SIGTERM the two workers that were never killed; their exit codes."""
    alive = [p for p in workers.procs if p.pid not in injector.killed]
    assert len(alive) == 2
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
    return [proc.wait(timeout=30) for proc in alive]


def check_outcomes(audit: Audit, positions: list[Position], outcomes: list[str | None]) -> None:
    """Every valid input labeled by Triton, every invalid one dead-lettered for its reason."""
    for pos, reason in zip(positions, outcomes, strict=True):
        if reason is None:
            assert pos in audit.labeled_at, f"valid input at {pos} was not labeled"
        else:
            assert audit.reasons_at.get(pos) == reason, pos
    assert m.CLASSIFY_FAILED not in audit.reasons_at.values(), "Triton's absence dead-lettered"
    ids = {f"f-{n}" for n, reason in enumerate(outcomes) if reason is None}
    assert not ids - set(audit.labeled)
    assert all(model.endswith("(triton)") for model in audit.models), audit.models


@pytest.mark.timeout(420)  # includes building the session model when run alone
async def test_random_faults_under_a_steady_stream_lose_nothing(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    triton_repository: Path,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    pool = ThreadPoolExecutor(max_workers=1)
    server = new_triton(triton_repository, tmp_path)
    await asyncio.get_running_loop().run_in_executor(pool, server.start)
    stop_publishing = asyncio.Event()
    outcomes: list[str | None] = []
    workers: WorkerProcesses | None = None
    try:
        settings = fault_settings(settings_factory, broker, server)
        await ensure_topics(settings, pipeline_topics(settings))
        workers = WorkerProcesses(settings, tmp_path)
        workers.start(2)
        await workers.wait_ready()

        started = time.time()
        injector = Injector(rng, workers, server, broker, pool)
        positions = await publish_through_faults(settings, injector, stop_publishing, outcomes)
        injector.check_workers()
        schedule_s = time.time() - started
        audit, copies = await audit_with_copies(settings, positions)
        drain_s = time.time() - started - schedule_s
        injector.check_workers()
        codes = stop_survivors(workers, injector)
    finally:
        stop_publishing.set()
        if workers is not None:
            workers.stop(timeout_s=5)
        await asyncio.get_running_loop().run_in_executor(pool, server.close)
        pool.shutdown()

    missing = audit.missing(positions, "position")
    unattributed = attribute(copies, injector.faults)
    report(injector.faults, unattributed, audit, positions, len(missing), started)
    print(f"schedule {schedule_s:.0f}s, drain and audit {drain_s:.0f}s (3s of it settling)")

    assert len(injector.faults) >= 20
    assert not missing, f"{len(missing)} inputs lost, e.g. {sorted(missing)[:5]}"
    check_outcomes(audit, positions, outcomes)
    assert codes == [0, 0], "workers must leave cleanly on SIGTERM"
