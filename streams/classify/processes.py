"""Classify workers as child processes (`python -m streams worker`): demo and benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from serving.child_process import spawn, terminate
from streams.classify.rebalance import READY_MARKER
from streams.settings import Settings


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that hands `settings` to a worker process (secrets included)."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif name == "model_repository":
            value = Path(value).resolve()
        env[f"FEEDPULSE_{name.upper()}"] = str(value)
    return env


class WorkerProcesses:
    """Start, await readiness of, and stop a set of worker processes."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def log_path(self, n: int) -> Path:
        """Where worker `n` writes its log."""
        return self.log_dir / f"worker-{n}.log"

    def start(self, count: int) -> None:
        """Start `count` more workers."""
        env = worker_env(self.settings)
        cmd = [sys.executable, "-m", "streams", "worker"]
        for _ in range(count):
            self.procs.append(spawn(cmd, self.log_path(len(self.procs)), env))

    async def wait_ready(self, timeout_s: float = 90, only: Iterable[int] | None = None) -> None:
        """Wait until every worker (or those numbered in `only`) owns partitions (its log
        says so)."""
        deadline = time.monotonic() + timeout_s
        pending = set(range(len(self.procs)) if only is None else only)
        while pending:
            for n in list(pending):
                text = self.log_path(n).read_text(errors="replace")
                if self.procs[n].poll() is not None:
                    code = self.procs[n].returncode
                    raise RuntimeError(f"worker {n} exited with {code}:\n{text[-2000:]}")
                if any(READY_MARKER in ln and "[]" not in ln for ln in text.splitlines()):
                    pending.discard(n)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"workers {sorted(pending)} got no partitions in {timeout_s:.0f}s"
                )
            await asyncio.sleep(0.2)

    def stop(self, timeout_s: float = 30) -> list[int | None]:
        """SIGTERM every worker (finish batch, commit, leave); SIGKILL stragglers."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [terminate(proc, timeout_s) for proc in self.procs]
