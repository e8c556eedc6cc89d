"""The command line as users run it: broker, publish, worker (with metrics) and tail."""

from __future__ import annotations

import asyncio
import glob
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serving.child_process import spawn
from serving.triton.server import SHM_GLOB
from streams.classify.processes import worker_env
from streams.kafka.broker import EmbeddedBroker, free_port, wait_for_port
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import audit_outputs
from tests.conftest import REPO_ROOT
from tests.kafka_support import scrape

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_publish_worker_tail_and_metrics(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = settings_factory(broker, metrics_port=port)
    await ensure_topics(settings, pipeline_topics(settings))
    feed = tmp_path / "feed.csv"
    rows = ["id,text,source,ticker"] + [
        f"c{i},Quarterly profit at Acme rises {i} percent,wire,ACME" for i in range(20)
    ]
    feed.write_text("\n".join([*rows, "c-bad,,wire,ACME"]) + "\n")

    process_factory(settings, "worker", log_name="worker")
    published = cli(settings, "publish", str(feed))
    assert published.returncode == 0, published.stderr
    assert "published 21 messages" in published.stderr

    ids = [f"c{i}" for i in range(20)] + ["c-bad"]
    audit = await audit_outputs(settings, ids, timeout_s=90)
    assert not audit.missing(ids)
    assert audit.reasons["c-bad"] == "empty_text"

    tailed = cli(settings, "tail", settings.output_topic, "-n", "20", "--idle-timeout", "5")
    assert tailed.returncode == 0, tailed.stderr
    docs = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert sorted(d["value"]["id"] for d in docs) == sorted(ids[:20])
    assert all(d["value"]["meta"] == {"ticker": "ACME"} for d in docs)

    dead = cli(settings, "tail", settings.dlq_topic, "-n", "1", "--idle-timeout", "5")
    (letter,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert letter["headers"]["feedpulse.reason"] == "empty_text"

    metrics = scrape(port)
    assert metrics["feedpulse_items_labeled_total"] == 20
    assert metrics['feedpulse_items_dead_lettered_total{reason="empty_text"}'] == 1
    assert metrics["feedpulse_batch_size_count"] >= 1
    assert metrics["feedpulse_end_to_end_latency_seconds_count"] == 20
    assert any(k.startswith("feedpulse_consumer_lag{") for k in metrics)


def test_broker_command_serves_kafka_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, 20, proc)  # type: ignore[arg-type]
        settings = Settings(bootstrap_servers=f"127.0.0.1:{port}", metrics_port=0)
        created = asyncio.run(ensure_topics(settings, ["cli-check"]))
        assert created == ["cli-check"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):  # the Tansu child went with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_triton_serve_runs_until_sigterm_and_cleans_shared_memory(
    triton_repository: Path, tmp_path: Path
) -> None:
    shm_before = set(glob.glob(SHM_GLOB))
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = worker_env(Settings(model_repository=triton_repository, metrics_port=0))
    env["FEEDPULSE_TRITON_PYTHON_ENV"] = str(REPO_ROOT / ".venv" / "triton-env")
    proc = spawn(
        [sys.executable, "-m", "streams", "triton", "serve", "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        tmp_path / "serve.log",
        env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{http}/v2/models/feedpulse_classifier/ready"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail((tmp_path / "serve.log").read_text()[-2000:])
        assert set(glob.glob(SHM_GLOB)) - shm_before, "the python backend uses shared memory"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert set(glob.glob(SHM_GLOB)) - shm_before == set(), "shared memory left behind"
