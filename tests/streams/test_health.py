"""The HTTP endpoint: metrics, liveness, and readiness that answers only when ready."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from streams.health import Readiness, serve_health


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_ready_answers_503_with_the_failing_checks_until_all_hold() -> None:
    registry = CollectorRegistry()
    Counter("feedpulse_probe_test", "a counter", registry=registry).inc()
    readiness = Readiness()
    port = free_port()
    serve_health(registry, readiness, "127.0.0.1", port)

    assert get(port, "/ready") == (503, "not ready: starting\n")
    state = {"model": False, "partitions": False}
    readiness.add("model", lambda: state["model"])
    readiness.add("partitions", lambda: state["partitions"])
    assert get(port, "/ready") == (503, "not ready: model, partitions\n")
    state["model"] = True
    assert get(port, "/ready") == (503, "not ready: partitions\n")
    state["partitions"] = True
    assert get(port, "/ready") == (200, "ready\n")

    assert get(port, "/healthz") == (200, "alive\n")
    status, body = get(port, "/metrics")
    assert status == 200 and "feedpulse_probe_test_total 1.0" in body


def test_port_zero_serves_nothing() -> None:
    assert serve_health(CollectorRegistry(), Readiness(), "127.0.0.1", 0) is None
