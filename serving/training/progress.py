"""The progress sink every training stage reports to (fine-tuning, evaluation, export)."""

from __future__ import annotations

from typing import Protocol


class TrainProgress(Protocol):
    """Progress sink: a stage name, units done of total, and live figures (loss, rows/s)."""

    def __call__(self, stage: str, done: int, total: int, **figures: float) -> None: ...
