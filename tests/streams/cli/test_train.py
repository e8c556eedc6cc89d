"""`feedpulse train` options: the adapter and device reach the fine-tuning config; a wrong
value, or a GPU this machine lacks, is a clear error before any data loads."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from streams.cli import app
from streams.learning import training


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keyword arguments `feedpulse train` hands run_training (which is not run)."""
    seen: dict[str, Any] = {}

    def fake_run(settings: Any, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {}

    monkeypatch.setattr(training, "run_training", fake_run)
    return seen


def test_adapter_option_reaches_the_config(runs: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["train", "--adapter", "lora", "--from-version", "1"])
    assert result.exit_code == 0, result.output
    assert runs["config"].adapter == "lora"
    # The incremental defaults stay beneath the option.
    assert runs["config"].lr == training.INCREMENTAL.lr


def test_device_option_reaches_the_config(runs: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["train", "--device", "cuda:1", "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    assert (runs["config"].device, runs["config"].precision) == ("cuda:1", "fp16")
    assert CliRunner().invoke(app, ["train"]).exit_code == 0
    assert runs["config"].device == "auto"


def test_unknown_adapter_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["train", "--adapter", "qlora"])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())
    assert "--adapter must be full or lora, not 'qlora'" in words


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "CPU"])
def test_unknown_device_is_a_clear_error(bad: str) -> None:
    result = CliRunner().invoke(app, ["train", "--device", bad])
    # A usage error, as for --precision; the message may wrap inside its box.
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())
    assert f"--device must be auto, cpu, cuda or cuda:N, not {bad!r}" in words


def test_cuda_without_a_gpu_stops_before_loading_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "load_declared", pytest.fail)
    result = CliRunner().invoke(app, ["train", "--device", "cuda"])
    assert result.exit_code == 2
    assert "'cuda' was asked for, but no CUDA device is visible" in result.output
    fp16 = CliRunner().invoke(app, ["train", "--device", "cpu", "--precision", "fp16"])
    assert fp16.exit_code == 2
    assert "fp16 is for CUDA devices" in fp16.output
