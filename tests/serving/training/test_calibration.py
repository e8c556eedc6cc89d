"""Temperature scaling: recovers a known over-confidence, folds into the head exactly, and
lowers the calibration error; per label for multi-label heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from serving.tasks import TaskHead
from serving.training.calibration import (
    calibrate_head,
    expected_calibration_error,
    fit_temperatures,
    probabilities,
    scale_head,
)

SENTIMENT = TaskHead("sentiment", ("negative", "neutral", "positive"))
EMOTION = TaskHead("emotion", ("anger", "joy"), "multilabel")


def sampled_multiclass(n: int, sharpen: float, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Logits whose softmax is calibrated, multiplied by `sharpen` (over-confident when > 1),
    and gold labels drawn from the calibrated probabilities."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, size=(n, 3)).astype(np.float32)
    p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
    gold = [SENTIMENT.labels[rng.choice(3, p=row)] for row in p]
    return torch.from_numpy(true * sharpen), gold


def test_a_known_over_confidence_is_recovered_and_the_error_falls() -> None:
    logits, gold = sampled_multiclass(4000, sharpen=3.0)
    (t,) = fit_temperatures(SENTIMENT, logits, gold)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(SENTIMENT, probabilities(SENTIMENT, logits), gold)
    after = expected_calibration_error(SENTIMENT, probabilities(SENTIMENT, logits / t), gold)
    assert after < before / 2


def test_scaling_is_folded_into_the_head_and_keeps_the_winner() -> None:
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    x = torch.randn(50, 8)
    with torch.no_grad():
        raw = head(x)
    scale_head(head, (2.5,))
    with torch.no_grad():
        assert torch.allclose(head(x), raw / 2.5, atol=1e-6)
        assert torch.equal(head(x).argmax(1), raw.argmax(1))


def test_multilabel_heads_get_a_temperature_per_label() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(3000, 2)).astype(np.float32)
    truth = rng.random((3000, 2)) < 1 / (1 + np.exp(-z))
    gold = [tuple(lab for j, lab in enumerate(EMOTION.labels) if truth[i, j]) for i in range(3000)]
    # anger's logits 4x too sharp, joy's left calibrated.
    logits = torch.from_numpy(z * np.array([4.0, 1.0], dtype=np.float32))
    head = nn.Linear(4, 2)
    calibrated, figures = calibrate_head(EMOTION, head, logits, gold)
    anger, joy = figures["temperature"]  # type: ignore[misc]
    assert anger == pytest.approx(4.0, rel=0.2) and joy == pytest.approx(1.0, rel=0.2)
    assert figures["val_ece_after"] < figures["val_ece_before"]  # type: ignore[operator]
    assert calibrated.shape == logits.shape


def test_too_few_rows_leave_the_head_as_it_was() -> None:
    logits, gold = sampled_multiclass(20, sharpen=3.0)
    head = nn.Linear(4, 3)
    weight = head.weight.detach().clone()
    out, figures = calibrate_head(SENTIMENT, head, logits, gold)
    assert figures["temperature"] is None and torch.equal(out, logits)
    assert torch.equal(head.weight, weight)
