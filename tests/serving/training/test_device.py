"""The training device: auto, cpu and cuda resolve (a GPU machine simulated, up to the device
boundary), precision per device, the fp16 gradient scaler, CPU checkpoints, a CPU run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.multihead import MultiHeadModel, load_encoder
from serving.tasks import DEFAULT_TASKS
from serving.training import finetune
from serving.training.checkpoint import CHECKPOINT_FILE, run_fingerprint
from serving.training.data import TaskData, load_task_dir
from serving.training.device import (
    autocast,
    grad_scaler,
    placement,
    resolve_device,
    resolve_precision,
    to_cpu,
)
from serving.training.finetune import FineTuneConfig, fine_tune
from serving.training.model_card import render_model_card
from tests.conftest import SHARED_DATA

SENTIMENT = DEFAULT_TASKS[0]
CPU = torch.device("cpu")
QUICK = FineTuneConfig(
    max_steps=3, batch_size=8, max_length=16, eval_every=2, precision="fp32", device="cpu"
)


@pytest.fixture
def cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees no CUDA device (as on this machine, and wherever the suite runs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def gpu_machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """torch sees one CUDA device; set `native_bf16` to choose whether it has native bf16."""
    gpu = {"native_bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: gpu["native_bf16"]
    )
    return gpu


@pytest.fixture(scope="module")
def tweets() -> list[TaskData]:
    """32 TweetEval training rows with small validation and test slices."""
    return [load_task_dir(SHARED_DATA / "tweeteval_sentiment", SENTIMENT, limit=32, seed=1)]


def fresh_model() -> tuple[MultiHeadModel, Any]:
    """MiniLM + untrained heads, seeded so every call starts from the same weights."""
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(None)
    return MultiHeadModel(encoder, DEFAULT_TASKS), tokenizer


def tensors(value: object) -> list[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors(v)]
    return []


@pytest.mark.usefixtures("cpu_machine")
def test_without_cuda_auto_is_the_cpu_and_cuda_is_a_clear_error() -> None:
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=f"'{asked}' was asked for, but no CUDA device is"):
            resolve_device(asked)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "meta", "mps", ""])
def test_unknown_devices_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


def test_cpu_precision_is_as_before_and_fp16_is_refused() -> None:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    native = check is not None and check()
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ValueError, match="fp16 is for CUDA devices"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", CPU)
    assert not grad_scaler(CPU, resolve_precision("auto", CPU)).is_enabled()


def test_on_a_gpu_auto_takes_it_with_bf16_and_no_scaler(gpu_machine: dict[str, bool]) -> None:
    device, precision = placement("auto", "auto")
    assert (device.type, precision) == ("cuda", "bf16")
    assert not grad_scaler(device, precision).is_enabled()
    context = autocast(device, precision)
    assert (context.device, context.fast_dtype) == ("cuda", torch.bfloat16)
    assert placement("cpu", "auto")[0] == CPU
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


def test_a_gpu_without_native_bf16_gets_fp16_with_a_scaler(gpu_machine: dict[str, bool]) -> None:
    gpu_machine["native_bf16"] = False
    device, precision = placement("cuda", "auto")
    assert (device.type, precision) == ("cuda", "fp16")
    assert grad_scaler(device, precision).is_enabled()
    assert autocast(device, precision).fast_dtype == torch.float16
    # Asked for explicitly, a precision is taken as given; fp32 turns autocast off.
    assert placement("cuda", "fp32")[1] == "fp32"
    assert not grad_scaler(device, "fp32").is_enabled()
    assert not autocast(device, "fp32")._enabled


def test_the_device_plays_no_part_in_a_checkpoint_s_fingerprint(tweets: list[TaskData]) -> None:
    rows = tweets[0].train
    on_cpu = run_fingerprint(rows, FineTuneConfig(device="cpu"), 16)
    assert on_cpu == run_fingerprint(rows, FineTuneConfig(device="cuda"), 16)
    assert on_cpu != run_fingerprint(rows, FineTuneConfig(device="cpu", lr=1e-4), 16)


def test_to_cpu_copies_nested_tensors() -> None:
    nested = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": None}
    moved = to_cpu(nested)
    assert isinstance(moved, dict) and moved["b"] is None and moved["a"][1][1] == 3
    assert all(t.device == CPU for t in tensors(moved))


@pytest.mark.usefixtures("cpu_machine")
def test_an_explicit_cpu_run_trains_and_checkpoints_cpu_tensors(
    tweets: list[TaskData], tmp_path: Path
) -> None:
    model, tokenizer = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fine_tune(model, tokenizer, tweets[0].train, tweets, QUICK, checkpoint_dir=tmp_path)
    assert (result.steps, result.device, result.precision) == (3, "cpu", "fp32")
    assert all(p.device == CPU for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    held = [saved["model"], saved["optimizer"], saved["best_state"]]
    assert tensors(held) and all(t.device == CPU for t in tensors(held))
    assert saved["result"]["device"] == "cpu" and saved["cuda_rng"] is None
    # The device is no part of the run's identity: another setting resumes the checkpoint.
    again, _ = fresh_model()
    auto = dataclasses.replace(QUICK, device="auto")
    resumed = fine_tune(
        again, tokenizer, tweets[0].train, tweets, auto, checkpoint_dir=tmp_path, resume=True
    )
    assert resumed.steps == 3 and resumed.device == "cpu"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_the_fp16_path_s_scaler_makes_the_same_update(
    tweets: list[TaskData], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU run stands in for fp16 on a GPU: the loop's scale, unscale, clip and step, and
    # the scaler's checkpoint, with fp32 gradients a power-of-two scale leaves unchanged.
    plain, tokenizer = fresh_model()
    fine_tune(plain, tokenizer, tweets[0].train, tweets, QUICK)
    monkeypatch.setattr(finetune, "grad_scaler", lambda *_: torch.amp.GradScaler("cpu"))
    scaled, _ = fresh_model()
    fine_tune(scaled, tokenizer, tweets[0].train, tweets, QUICK, checkpoint_dir=tmp_path)
    for name, tensor in plain.state_dict().items():
        assert torch.allclose(tensor, scaled.state_dict()[name], atol=1e-6), name
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    # Every step went through the scaler, none found an overflow.
    assert saved["scaler"]["scale"] == 2.0**16 and saved["scaler"]["_growth_tracker"] == 3


def test_the_model_card_shows_the_device(
    finetune_manifest: Callable[..., dict[str, Any]],
) -> None:
    manifest = finetune_manifest(precision="bf16", device="cuda")
    assert "device: cuda; precision: bf16" in render_model_card(manifest, {})
    # A run recorded before the device was one on the CPU.
    manifest = finetune_manifest(precision="bf16")
    assert "device: cpu; precision: bf16" in render_model_card(manifest, {})
