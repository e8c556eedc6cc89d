"""Fixtures shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def finetune_manifest() -> Callable[..., dict[str, Any]]:
    """A fine-tuned version's manifest for the model card: `result` and `config` entries
    are laid over a finished 10-step run's."""

    def make(config: dict[str, Any] | None = None, **result: Any) -> dict[str, Any]:
        run = {
            "steps": 10,
            "best_step": 10,
            "best_score": 0.5,
            "stopped_early": False,
            "max_length": 32,
            "precision": "fp32",
            "seconds": 3.0,
        }
        return {
            "name": "m",
            "version": 2,
            "created": "now",
            "base_checkpoint": "minilm",
            "max_length": 128,
            "pooling": "mean",
            "tasks": [{"name": "sentiment", "labels": ["negative", "positive"]}],
            "training": {"mode": "finetune", "config": config or {}, "result": {**run, **result}},
        }

    return make
