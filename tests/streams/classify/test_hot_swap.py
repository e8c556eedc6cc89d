"""A running worker follows a promotion on both backends: the new version's tokenizer
window, not only its version stamp, serves the outputs after the swap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serving.export import export_version
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.publish import publish
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.settings import Settings
from streams.testing.audit import audit_outputs
from tests.conftest import BuiltModel, new_triton

pytestmark = pytest.mark.integration

# About 40 tokens: inside version 1's 128-token window, past version 2's 16.
LONG_TEXT = " ".join(["Shares rally as the central bank holds rates steady again"] * 4)
SWAPPED_WINDOW = 16


@pytest.mark.parametrize("backend", ["onnx", "triton"])
async def test_a_promoted_version_with_another_window_is_served_without_a_restart(
    backend: str,
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    triton_repository: Path,
    built_model: BuiltModel,
    tmp_path: Path,
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(triton_repository, repository)
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, Any] = {"model_repository": repository, "model_watch_s": 0.5}
        if backend == "triton":
            server = new_triton(repository, tmp_path)
            server.start()
            stack.callback(server.close)
            overrides |= {"backend": "triton", "triton_url": server.grpc_url}
        settings = settings_factory(broker, **overrides)
        await ensure_topics(settings, pipeline_topics(settings))
        process_factory(settings, "worker", log_name="worker")
        first = await publish(
            settings, [(b"v-0", json.dumps({"id": "v-0", "text": LONG_TEXT}).encode())]
        )
        before = await audit_outputs(settings, first, by="position", timeout_s=90)
        (doc,) = before.samples
        assert doc["model"]["version"] == "1" and doc["truncated"] is False

        export_version(
            built_model.model,
            built_model.tokenizer,
            repository=repository,
            name="feedpulse_classifier",
            max_length=SWAPPED_WINDOW,
            base_checkpoint="test",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        latest: dict[str, Any] = doc
        n = 0
        while latest["model"]["version"] != "2" and loop.time() < deadline:
            n += 1
            item_id = f"v-{n}"
            value = json.dumps({"id": item_id, "text": LONG_TEXT}).encode()
            await publish(settings, [(item_id.encode(), value)])
            audit = await audit_outputs(settings, [item_id], timeout_s=30, settle_s=0)
            latest = next(d for d in audit.samples if d["id"] == item_id)
            await asyncio.sleep(0.5)

    log = (tmp_path / "worker-0.log").read_text()
    assert "cannot switch" not in log and "failed its warm-up" not in log, log[-2000:]
    assert latest["model"]["version"] == "2", "version 2 was never served"
    assert latest["truncated"] is True, "served as version 2 but with version 1's window"
    assert latest["model"]["variant"] == ("triton" if backend == "triton" else "int8")
