"""Child processes feedpulse launches (broker, Triton, workers): spawned, logged, reaped."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path


def die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook making the child get SIGTERM when its parent dies, even by SIGKILL.

    An orphaned server would hold its ports and memory forever. libc is loaded here, in
    the parent, so the forked child runs no import. Linux only; elsewhere None. Linux
    signals the child when the *thread* that forked it ends: spawn from a long-lived
    thread (the main thread, or the event loop's).
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def spawn(
    cmd: Sequence[str], log_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` with stdout and stderr appended to `log_path` (or discarded)."""
    if log_path is None:
        return subprocess.Popen(
            list(cmd),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent_hook(),
        )
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            list(cmd),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent_hook(),
        )


def terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
    """SIGTERM `proc`, SIGKILL it if it lingers past `timeout_s`; returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
