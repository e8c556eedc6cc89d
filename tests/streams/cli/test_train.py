"""`feedpulse train` options: the adapter reaches the fine-tuning config, a wrong one is a
clear error."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.learning import training


def test_adapter_option_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(settings: Any, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {}

    monkeypatch.setattr(training, "run_training", fake_run)
    result = CliRunner().invoke(app, ["train", "--adapter", "lora", "--from-version", "1"])
    assert result.exit_code == 0, result.output
    assert seen["config"].adapter == "lora"
    # The incremental defaults stay beneath the option.
    assert seen["config"].lr == training.INCREMENTAL.lr


def test_unknown_adapter_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["train", "--adapter", "qlora"])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())
    assert "--adapter must be full or lora, not 'qlora'" in words
