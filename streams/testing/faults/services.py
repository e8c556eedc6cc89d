"""The loop's long-running processes as restartable children: each incarnation gets its
own log, so a kill and its restart can be told apart afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serving.child_process import spawn, terminate
from streams.classify.processes import worker_env
from streams.settings import Settings


class Service:
    """One `python -m streams <command>` process, restarted by hand after each kill."""

    def __init__(
        self,
        command: str,
        settings: Settings,
        log_dir: Path,
        ready: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.extra_env = env or {}
        self.settings = settings
        self.log_dir = log_dir
        self.ready_marker = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.killed_pids: set[int] = set()

    @property
    def log_path(self) -> Path:
        """The current incarnation's log."""
        return self.log_dir / f"{self.command}-{self.incarnation}.log"

    def log_text(self) -> str:
        """The current incarnation's log so far."""
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start a new incarnation."""
        self.incarnation += 1
        cmd = [sys.executable, "-m", "streams", self.command]
        self.proc = spawn(cmd, self.log_path, {**worker_env(self.settings), **self.extra_env})

    def kill(self) -> int:
        """SIGKILL the current incarnation; returns its pid."""
        assert self.proc is not None
        pid = self.proc.pid
        self.killed_pids.add(pid)
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return pid

    def check(self) -> None:
        """Raise if the process exited without being killed here."""
        proc = self.proc
        if proc is not None and proc.poll() is not None and proc.pid not in self.killed_pids:
            tail = self.log_text()[-3000:]
            raise RuntimeError(f"{self.command} exited ({proc.returncode}):\n{tail}")

    async def wait_ready(self, timeout_s: float = 120) -> float:
        """Wait for the ready marker in the current log; seconds it took."""
        started = time.monotonic()
        while self.ready_marker not in self.log_text():
            self.check()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{self.command} not ready in {timeout_s:g}s")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (SIGKILL past `timeout_s`); the exit code."""
        return terminate(self.proc, timeout_s)
