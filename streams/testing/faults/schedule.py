"""The seeded fault schedule and the injector that carries it out against the loop."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from serving.model_store import list_versions
from serving.triton.server import TritonServer
from streams.classify.processes import WorkerProcesses, worker_env
from streams.kafka.broker import EmbeddedBroker
from streams.testing.faults.services import Service

KINDS = {
    "worker": "classify worker kill -9",
    "triton": "Triton kill -9 (short)",
    "triton_long": "Triton kill -9 past the session timeout, a worker killed meanwhile",
    "broker": "broker SIGSTOP",
    "watch": "model watch kill -9",
    "trainer": "trainer kill -9 with a job in hand",
    "alerts": "alert worker kill -9",
    "rollback": "rollback mid-stream",
    "join": "worker joins",
    "leave": "worker leaves (SIGTERM)",
}


@dataclass
class Fault:
    """One injected fault, when (wall clock) and against whom."""

    kind: str
    at: float
    detail: str
    victim_pid: int | None = None
    duplicates: int = 0
    # When the worker this fault started (a replacement, a joiner) owned partitions: its
    # join rebalances the group, so the fault's effects last until then.
    settled_at: float | None = None


@dataclass
class Plan:
    """How many faults of each kind, the quiet time before each, and outage lengths."""

    counts: dict[str, int]
    gap_s: tuple[float, float] = (0.5, 2.5)
    triton_down_s: tuple[float, float] = (2.0, 4.0)
    broker_stopped_s: tuple[float, float] = (1.0, 3.0)
    min_workers: int = 2
    max_workers: int = 3

    @property
    def total(self) -> int:
        """Faults in the plan."""
        return sum(self.counts.values())


@dataclass
class Loop:
    """Everything the injector may hit."""

    workers: WorkerProcesses
    server: TritonServer
    broker: EmbeddedBroker
    watch: Service
    trainer: Service
    alerts: Service
    session_timeout_s: float
    left: set[int] = field(default_factory=set)  # workers stopped cleanly


class Injector:
    """Runs the plan's faults in a seeded order, one after another."""

    def __init__(
        self,
        rng: random.Random,
        plan: Plan,
        loop: Loop,
        pool: ThreadPoolExecutor,
        on_fault: Callable[[Fault], None],
    ) -> None:
        self.rng = rng
        self.plan = plan
        self.loop = loop
        self.on_fault = on_fault
        self.faults: list[Fault] = []
        self.killed: set[int] = set()
        self._settling: list[asyncio.Task[None]] = []
        # Triton is started from this one long-lived thread: the server gets SIGTERM when
        # the thread that spawned it ends, and a blocking start must not stall the stream.
        self.pool = pool

    def _record(self, kind: str, detail: str, victim: int | None = None) -> None:
        fault = Fault(kind, time.time(), detail, victim)
        self.faults.append(fault)
        self.on_fault(fault)

    def live_workers(self) -> list[int]:
        """Indexes of workers neither killed nor stopped."""
        gone = self.killed | self.loop.left
        return [n for n, p in enumerate(self.loop.workers.procs) if p.pid not in gone]

    def check(self) -> None:
        """Every process not hit here must still run."""
        for n in self.live_workers():
            proc = self.loop.workers.procs[n]
            if proc.poll() is not None:
                tail = self.loop.workers.log_path(n).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {n} exited by itself ({proc.returncode}):\n{tail}")
        for service in (self.loop.watch, self.loop.trainer, self.loop.alerts):
            service.check()

    async def run(self) -> None:
        """Inject every fault of the plan."""
        kinds = [kind for kind, n in self.plan.counts.items() for _ in range(n)]
        self.rng.shuffle(kinds)
        for kind in kinds:
            await asyncio.sleep(self.rng.uniform(*self.plan.gap_s))
            self.check()
            await getattr(self, f"_{kind}")()
        await asyncio.gather(*self._settling, return_exceptions=True)

    def _start_worker(self, fault: Fault) -> None:
        """Start a worker on behalf of `fault`; note when it owns partitions."""
        self.loop.workers.start(1)
        index = len(self.loop.workers.procs) - 1

        async def settle() -> None:
            await self.loop.workers.wait_ready(timeout_s=120, only=[index])
            fault.settled_at = time.time()

        self._settling.append(asyncio.create_task(settle()))

    async def _kill_worker(self, detail: str) -> None:
        live = self.live_workers()
        # A victim in its batch cycle, not a replacement still joining.
        await self.loop.workers.wait_ready(timeout_s=180, only=live)
        await asyncio.sleep(self.rng.uniform(0, 1))
        victim = self.loop.workers.procs[self.rng.choice(live)]
        self._record(
            "worker" if not detail else "triton_long", detail or f"pid {victim.pid}", victim.pid
        )
        self.killed.add(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self._start_worker(self.faults[-1])

    async def _worker(self) -> None:
        await self._kill_worker("")

    async def _triton_down(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.loop.server.kill)
        # What an operator does before restarting: reap the dead server's python stubs and
        # shared memory (stop() on a dead server only cleans up).
        await loop.run_in_executor(self.pool, self.loop.server.stop)
        await asyncio.sleep(seconds)
        await loop.run_in_executor(self.pool, self.loop.server.start)

    async def _triton(self) -> None:
        down = self.rng.uniform(*self.plan.triton_down_s)
        self._record("triton", f"down {down:.1f}s + restart")
        await self._triton_down(down)

    async def _triton_long(self) -> None:
        # Longer than a session: a worker killed meanwhile is expelled and the group
        # rebalances while every survivor waits on inference.
        down = self.loop.session_timeout_s + self.rng.uniform(2.0, 6.0)
        self._record("triton_long", f"down {down:.1f}s + restart")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.loop.server.kill)
        await loop.run_in_executor(self.pool, self.loop.server.stop)
        started = time.monotonic()
        live = self.live_workers()
        victim = self.loop.workers.procs[self.rng.choice(live)]
        self.killed.add(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.faults[-1].victim_pid = victim.pid
        self._start_worker(self.faults[-1])
        await asyncio.sleep(max(0.0, down - (time.monotonic() - started)))
        await loop.run_in_executor(self.pool, self.loop.server.start)

    async def _broker(self) -> None:
        pid = self.loop.broker.pid
        assert pid is not None
        stopped = self.rng.uniform(*self.plan.broker_stopped_s)
        self._record("broker", f"stopped {stopped:.1f}s")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stopped)
        finally:
            os.kill(pid, signal.SIGCONT)

    async def _restart(self, service: Service, kind: str, detail: str = "") -> None:
        pid = service.kill()
        self._record(kind, detail or f"pid {pid}", pid)
        await asyncio.sleep(self.rng.uniform(0, 1.5))
        service.start()

    async def _watch(self) -> None:
        await self._restart(self.loop.watch, "watch")

    async def _alerts(self) -> None:
        await self._restart(self.loop.alerts, "alerts")

    async def _trainer(self) -> None:
        # Kill in the phase drawn for this fault: training, or between the candidate's
        # export and its decision (judging, promoting, announcing).
        trainer = self.loop.trainer
        target = self.rng.choice(["mid-training", "mid-promotion"])
        for _ in range(120):  # up to 60 s for a job to reach that phase
            if job_phase(trainer.log_text()) == target:
                break
            await asyncio.sleep(0.5)
        await self._restart(trainer, "trainer", job_phase(trainer.log_text()))

    async def _rollback(self) -> None:
        s = self.loop.workers.settings
        for _ in range(120):  # up to 60 s for a promotion to roll back
            if len(list_versions(s.model_repository, s.model_name)) >= 2:
                break
            await asyncio.sleep(0.5)
        env = worker_env(s)
        cmd = [sys.executable, "-m", "streams", "model", "rollback"]
        done = await asyncio.to_thread(
            subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=120
        )
        last = (done.stdout + done.stderr).strip().splitlines()
        self._record("rollback", (last[-1] if last else "")[:60] or f"exit {done.returncode}")

    async def _join(self) -> None:
        if len(self.live_workers()) >= self.plan.max_workers:
            await self._leave()
            return
        self._record("join", f"worker {len(self.loop.workers.procs)}")
        self._start_worker(self.faults[-1])

    async def _leave(self) -> None:
        live = self.live_workers()
        victim = self.loop.workers.procs[self.rng.choice(live)]
        # Recorded before a replacement joins: the join rebalances the group too, and
        # its repeats belong to this fault (they went unexplained when it was recorded
        # after the join).
        self._record("leave", f"pid {victim.pid}", victim.pid)
        fault = self.faults[-1]
        if len(live) <= self.plan.min_workers:
            self.loop.workers.start(1)
            await self.loop.workers.wait_ready(
                timeout_s=180, only=[len(self.loop.workers.procs) - 1]
            )
        self.loop.left.add(victim.pid)
        victim.send_signal(signal.SIGTERM)
        await asyncio.to_thread(victim.wait, 60)
        fault.settled_at = time.time()


def job_in_hand(log: str) -> bool:
    """Whether the trainer's log shows a job started and not yet decided."""
    started = log.rfind("fine-tune from version")
    return started >= 0 and log.rfind("(candidate ", started) < 0


def job_phase(log: str) -> str:
    """What the trainer was doing when killed, from its log."""
    if not job_in_hand(log):
        return "idle"
    tail = log[log.rfind("fine-tune from version") :]
    # The candidate is exported before it is evaluated, then promoted or rejected.
    if "evaluating" in tail:
        return "mid-promotion"
    return "mid-training" if "fine-tuning" in tail else "starting"
