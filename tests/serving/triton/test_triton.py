"""The Triton backend against a real tritonserver (the one bundled in nvidia-pytriton)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.backends.contract import InferenceError
from serving.backends.onnx import OnnxClassifier
from serving.backends.triton_client import TritonClassifier
from serving.model_store import (
    MANIFEST,
    candidate_path,
    load_version,
    promote_version,
    retire_newest,
)
from serving.training.data import read_labeled, seed_data_path, split_holdout
from serving.triton.server import TritonServer
from tests.conftest import REPO_ROOT, BuiltModel, new_triton

pytestmark = pytest.mark.integration

CONFIGS = sorted(REPO_ROOT.glob("triton_models/**/config.pbtxt")) + sorted(
    REPO_ROOT.glob("deploy/**/config.pbtxt")
)


@pytest.fixture(scope="module")
def triton(
    triton_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """One real Triton server for this module's tests."""
    with new_triton(triton_repository, tmp_path_factory.mktemp("triton")) as server:
        yield server


def metric_total(server: TritonServer, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(ln.rpartition(" ")[2]) for ln in lines if ln.startswith(name + "{"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_config_parses_as_a_triton_model_config(path: Path) -> None:
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert config.name == path.parent.name
    assert {i.name for i in config.input} == {"input_ids", "attention_mask"}
    assert "embedding" in {o.name for o in config.output}


def test_there_is_a_config_to_check() -> None:
    assert CONFIGS, "no config.pbtxt found"


async def test_triton_matches_the_in_process_backend(
    triton: TritonServer, built_model: BuiltModel
) -> None:
    _, held = split_holdout(read_labeled(seed_data_path(), built_model.model.tasks))
    texts = [r.text for r in held]
    local = OnnxClassifier(built_model.version, variant="fp32").classify_sync(texts)
    remote_clf = TritonClassifier(triton.grpc_url, built_model.version)
    try:
        remote = await remote_clf.classify(texts)
    finally:
        await remote_clf.close()
    assert remote_clf.info.version == "1" and remote_clf.info.variant == "triton"
    for task in built_model.model.tasks:
        agree = np.mean(
            [
                a.tasks[task.name].label == b.tasks[task.name].label
                for a, b in zip(local, remote, strict=True)
            ]
        )
        assert agree == 1.0, f"{task.name}: labels agree on {agree:.1%}"
        diff = max(
            abs(a.tasks[task.name].scores[lab] - b.tasks[task.name].scores[lab])
            for a, b in zip(local, remote, strict=True)
            for lab in task.labels
        )
        # Same fp32 graph; only the padding of merged ragged requests differs.
        assert diff < 1e-3, f"{task.name}: class scores differ by up to {diff:.5f}"


async def inference_stats(url: str) -> tuple[int, int]:
    """(inference_count, execution_count) of the model, from Triton's statistics API."""
    from tritonclient.grpc.aio import InferenceServerClient

    client = InferenceServerClient(url)
    try:
        stats = await client.get_inference_statistics("feedpulse_classifier")
    finally:
        await client.close()
    # One entry per loaded version, in no fixed order: sum them.
    return (
        sum(int(m.inference_count) for m in stats.model_stats),
        sum(int(m.execution_count) for m in stats.model_stats),
    )


async def test_dynamic_batching_merges_concurrent_requests(
    triton: TritonServer, built_model: BuiltModel
) -> None:
    clf = TritonClassifier(triton.grpc_url, built_model.version, chunk_size=1)
    count0, exec0 = await inference_stats(triton.grpc_url)
    try:
        texts = [f"Headline number {i}: markets and matches" for i in range(16)]
        await asyncio.gather(*(clf.classify(texts) for _ in range(8)))  # 128 one-text requests
    finally:
        await clf.close()
    # Statistics are updated as requests complete; allow the last ones to land.
    for _ in range(50):
        count, executions = await inference_stats(triton.grpc_url)
        if count - count0 >= 128:
            break
        await asyncio.sleep(0.1)
    inferences, executions = count - count0, executions - exec0
    assert inferences == 128
    assert executions < inferences, f"{executions} executions for {inferences} inferences"
    # The Prometheus endpoint reports the same batching.
    assert metric_total(triton, "nv_inference_exec_count") < metric_total(
        triton, "nv_inference_count"
    )


async def test_triton_follows_promotion_and_rollback_without_a_restart(
    triton_repository: Path, tmp_path: Path
) -> None:
    name = "feedpulse_classifier"
    repo = tmp_path / "repo"
    (repo / name).mkdir(parents=True)
    shutil.copy(triton_repository / name / "config.pbtxt", repo / name / "config.pbtxt")
    shutil.copytree(triton_repository / name / "1", repo / name / "1")
    candidate = candidate_path(repo, name, 2)
    shutil.copytree(triton_repository / name / "1", candidate)
    manifest = json.loads((candidate / MANIFEST).read_text())
    (candidate / MANIFEST).write_text(json.dumps({**manifest, "version": 2}))

    async def served_version(clf: TritonClassifier, wanted: str) -> str:
        for _ in range(60):
            with contextlib.suppress(InferenceError):  # between unload and load
                await clf.classify(["markets rally"])
            if clf.info.version == wanted:
                break
            await asyncio.sleep(0.5)
        return clf.info.version

    with new_triton(repo, tmp_path) as server:
        clf = TritonClassifier(server.grpc_url, load_version(repo, name, 1))
        try:
            assert await served_version(clf, "1") == "1"
            promote_version(repo, name, 2)
            assert await served_version(clf, "2") == "2"
            retire_newest(repo, name)
            assert await served_version(clf, "1") == "1"
        finally:
            await clf.close()
