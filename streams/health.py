"""The HTTP endpoint of every long-running process: `/metrics`, `/ready` and `/healthz`.

`/healthz` answers while the process lives (liveness and startup probes); `/ready` answers
200 only while every readiness check holds - for a classify worker, its model loaded and
warmed and partitions assigned - and 503 with the checks that do not, otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[..., Any]


class Readiness:
    """Named checks that must all hold before the process is ready for traffic."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}

    def add(self, name: str, check: Callable[[], bool]) -> None:
        """Require `check()` to be true (replacing an earlier check of that name)."""
        self._checks[name] = check

    def failing(self) -> list[str]:
        """The checks that do not hold now (none registered means not ready)."""
        if not self._checks:
            return ["starting"]
        return [name for name, check in self._checks.items() if not check()]

    @property
    def ready(self) -> bool:
        """Whether every check holds."""
        return not self.failing()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds must not flood the log."""


def health_app(registry: CollectorRegistry, readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: `/ready`, `/healthz`, and the registry's metrics everywhere else."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"alive\n"]
        if path == "/ready":
            failing = readiness.failing()
            if failing:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [f"not ready: {', '.join(failing)}\n".encode()]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ready\n"]
        body: Iterable[bytes] = metrics(environ, start_response)
        return body

    return app


def serve_health(
    registry: CollectorRegistry, readiness: Readiness, host: str, port: int
) -> int | None:
    """Serve the endpoints on a daemon thread; port 0 means off. Returns the bound port."""
    if port == 0:
        return None
    server = make_server(
        host,
        port,
        health_app(registry, readiness),
        server_class=_Server,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return port
