"""FEEDPULSE_FINETUNE_DEVICE: the trainer's incremental fine-tunes run where it says."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.learning import training
from streams.settings import Settings


def test_device_setting_reaches_the_trainers_fine_tune(monkeypatch: pytest.MonkeyPatch) -> None:
    # The replay data plays no part here: skip reading it.
    monkeypatch.setattr(training, "load_declared", lambda *a, **kw: [])
    assert Settings().finetune_device == "auto"
    assert training.trainer_config(Settings()).finetune.device == "auto"
    monkeypatch.setenv("FEEDPULSE_FINETUNE_DEVICE", "cuda:0")
    assert training.trainer_config(Settings()).finetune.device == "cuda:0"
    assert training.trainer_config(Settings(finetune_device="cpu")).finetune.device == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", ""])
def test_unknown_device_setting_is_refused(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPULSE_FINETUNE_DEVICE", bad)
    with pytest.raises(ValidationError, match="finetune_device"):
        Settings()
