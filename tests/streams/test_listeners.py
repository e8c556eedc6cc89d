"""With default settings every socket feedpulse listens on is bound to loopback only."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.classify.backend import local_triton
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _address(hex_addr: str) -> str:
    """A /proc/net/tcp{,6} address (host byte order, 32-bit words) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    # gRPC listens on an IPv6 socket bound to the IPv4-mapped loopback: the same 127.0.0.1.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().as_posix()
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                host, port = local.rsplit(":", 1)
                found.add((_address(host), int(port, 16)))
    return found


def outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (`hostname -I`)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [a for a in out.stdout.split() if "." in a and not a.startswith("127.")]


def assert_loopback_only(pid: int, ports: set[int], bind_timeout_s: float = 15.0) -> None:
    """Every listener of `pid` is on 127.0.0.1, `ports` among them; refused from outside.

    Ready is not bound: Triton reports ready over HTTP while it may still be opening its
    other listeners, so the ports get a few seconds to appear.
    """
    deadline = time.monotonic() + bind_timeout_s
    sockets = listening_sockets(pid)
    while not ports <= {port for _, port in sockets} and time.monotonic() < deadline:
        time.sleep(0.2)
        sockets = listening_sockets(pid)
    assert ports <= {port for _, port in sockets}, sockets
    assert {host for host, _ in sockets} == {"127.0.0.1"}, sockets
    for address in outside_addresses():
        for port in ports:
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
                pass


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the process exited"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.2)
    pytest.fail(f"{url} never answered")


def test_a_worker_and_the_embedded_broker_listen_on_loopback_only(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
) -> None:
    port = free_port()
    settings = settings_factory(broker, metrics_port=port)  # metrics_host left at its default
    assert settings.metrics_host == Settings().metrics_host == "127.0.0.1"
    assert Settings().broker_listen.startswith("127.0.0.1:")
    proc = process_factory(settings, "worker", log_name="worker")
    wait_for_http(f"http://127.0.0.1:{port}/metrics", 90, proc)
    assert_loopback_only(proc.pid, {port})
    assert broker.pid is not None
    assert_loopback_only(broker.pid, {broker.port})


def test_local_triton_listens_on_loopback_only(triton_repository: Path, tmp_path: Path) -> None:
    settings = Settings(
        model_repository=triton_repository,
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        triton_python_env=REPO_ROOT / ".venv" / "triton-env",
    )
    assert settings.triton_bind_host == "127.0.0.1"
    with local_triton(settings, tmp_path / "triton.log") as server:
        assert server.pid is not None
        ports = {server.http_port, server.grpc_port, server.metrics_port}
        assert_loopback_only(server.pid, ports)
