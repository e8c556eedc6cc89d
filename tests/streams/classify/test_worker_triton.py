"""The classify worker through a real Triton server, including Triton dying mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams import messages as m
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import publish
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import audit_outputs
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
