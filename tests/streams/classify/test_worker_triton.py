"""The classify worker through a real Triton server, including Triton dying mid-stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams import messages as m
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import publish
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import Audit, audit_outputs
from tests.conftest import new_triton
from tests.streams.classify.test_worker import mixed_feed, wait_for_output_count

pytestmark = pytest.mark.integration


async def test_triton_killed_and_restarted_mid_stream_loses_nothing(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    triton_repository: Path,
    tmp_path: Path,
) -> None:
    server = new_triton(triton_repository, tmp_path)
    server.start()
    try:
        settings = settings_factory(
            broker, backend="triton", triton_url=server.grpc_url, triton_timeout_s=2.0
        )
        await ensure_topics(settings, pipeline_topics(settings))
        process_factory(settings, "worker", log_name="worker")
        records, outcomes = mixed_feed(1500)
        positions = await publish(settings, records)
        await wait_for_output_count(settings, 200, timeout_s=90)
        server.kill()
        await asyncio.sleep(4)  # the worker retries, pauses fetching, keeps its batch
        server.start()
        audit = await audit_outputs(settings, positions, by="position", timeout_s=240, settle_s=1)
    finally:
        server.close()

    assert not audit.missing(positions, "position")
    for pos, reason in zip(positions, outcomes, strict=True):
        if reason is None:
            assert pos in audit.labeled_at, "a valid input was dead-lettered or lost"
    assert m.CLASSIFY_FAILED not in audit.reasons_at.values()
    docs = audit.samples
    assert {d["model"]["variant"] for d in docs} == {"triton"}
    assert {d["model"]["version"] for d in docs} == {"1"}
    log = (tmp_path / "worker-0.log").read_text()
    assert "paused fetching" in log and "fetching resumed" in log
    print(f"Triton kill -9 + restart: duplicates={audit.duplicates()}")
    json.dumps(docs[0])  # outputs stay plain JSON


async def test_a_triton_outage_does_not_hold_a_rebalance_and_other_workers_keep_flowing(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    triton_repository: Path,
    tmp_path: Path,
) -> None:
    server = new_triton(triton_repository, tmp_path)
    server.start()
    try:
        settings = settings_factory(
            broker, backend="triton", triton_url=server.grpc_url, triton_timeout_s=2.0
        )
        await ensure_topics(settings, pipeline_topics(settings))
        process_factory(settings, "worker", log_name="triton")
        records, outcomes = mixed_feed(3000)
        positions = await publish(settings, records)
        await wait_for_output_count(settings, 200, timeout_s=90)
        server.kill()
        triton_log = tmp_path / "triton-0.log"
        await wait_for_log(triton_log, "paused fetching", timeout_s=30)
        # A second worker, in-process, joins while Triton is away: the rebalance must not
        # wait for the outage, and its partitions must flow meanwhile.
        process_factory(
            settings.model_copy(update={"backend": "onnx"}), "worker", log_name="inproc"
        )
        inproc_log = tmp_path / "inproc-1.log"
        await wait_for_log(inproc_log, "partitions assigned: ['", timeout_s=45)
        await wait_for_log(triton_log, "partitions revoked during inference", timeout_s=5)
        down_until = time.time() + 5
        await asyncio.sleep(5)  # Triton stays away while the in-process worker labels
        server.start()
        during: list[str] = []

        def labeled_meanwhile(_: Audit, rec: Any) -> None:
            if rec.topic != settings.output_topic:
                return
            doc = json.loads(rec.value)
            if doc["model"]["variant"] != "triton" and doc["timestamps"]["classified"] < down_until:
                during.append(doc["id"])

        audit = await audit_outputs(
            settings,
            positions,
            by="position",
            timeout_s=240,
            settle_s=1,
            on_record=labeled_meanwhile,
        )
    finally:
        server.close()

    assert not audit.missing(positions, "position")
    for pos, reason in zip(positions, outcomes, strict=True):
        if reason is None:
            assert pos in audit.labeled_at, "a valid input was dead-lettered or lost"
    assert m.CLASSIFY_FAILED not in audit.reasons_at.values()
    assert during, "nothing was labeled while Triton was away"
    print(f"Triton outage + rebalance: {len(during)} labeled during it, dups={audit.duplicates()}")


async def wait_for_log(path: Path, marker: str, timeout_s: float) -> None:
    """Wait until `marker` appears in the process log at `path`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if marker in log_text(path):
            return
        await asyncio.sleep(0.2)
    text = log_text(path)[-3000:]
    raise AssertionError(f"{marker!r} not in {path.name} within {timeout_s:g}s:\n{text}")


def log_text(path: Path) -> str:
    """The process log so far ('' before the process wrote it)."""
    return path.read_text(errors="replace") if path.exists() else ""
