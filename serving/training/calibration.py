"""Temperature scaling: one temperature per multi-class head, one per label of a multi-label
head, fitted on validation rows by minimising the negative log-likelihood, and folded into
the head's weights (logits / T = (W / T) x + b / T), so the exported graph emits calibrated
scores and nothing downstream - backends, Triton, the watch, alerts - changes.

Reliability is reported as the expected calibration error (15 equal-width bins): of the
top label for multi-class heads, and over every (row, label) score for multi-label ones.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from serving.tasks import Gold, TaskHead, gold_indices
from serving.training.thresholds import gold_matrix

BINS = 15
# Fewer validation rows than this (a small feedback job) would fit a temperature to noise:
# the head keeps its scale.
MIN_ROWS = 50
# Temperatures are searched in log space within these bounds: below 0.05 or above 20 the
# validation set is telling us something is wrong, not that scores need rescaling.
MIN_T, MAX_T = 0.05, 20.0


def fit_temperatures(task: TaskHead, logits: torch.Tensor, gold: list[Gold]) -> tuple[float, ...]:
    """The temperature(s) minimising validation NLL: one (multi-class) or one per label."""
    logits = logits.detach().float()
    columns = len(task.labels) if task.multilabel else 1
    log_t = torch.zeros(columns, requires_grad=True)
    if task.multilabel:
        y = torch.from_numpy(gold_matrix(task, gold).astype(np.float32))

        def nll() -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), y)

    else:
        target = torch.tensor([gold_indices(task, g)[0] for g in gold])

        def nll() -> torch.Tensor:
            return nn.functional.cross_entropy(logits / log_t.exp(), target)

    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    opt.step(closure)
    bounded = log_t.detach().clamp(math.log(MIN_T), math.log(MAX_T)).exp()
    return tuple(round(float(t), 4) for t in bounded)


def scale_head(head: nn.Linear, temperatures: tuple[float, ...]) -> None:
    """Fold the temperature(s) into `head`: each output row divided by its temperature."""
    t = torch.tensor(temperatures, dtype=head.weight.dtype, device=head.weight.device)
    with torch.no_grad():
        head.weight.div_(t.unsqueeze(1))
        head.bias.div_(t)


def expected_calibration_error(
    task: TaskHead, scores: npt.NDArray[np.float32], gold: list[Gold]
) -> float:
    """ECE of a head's scores: the top label's (multi-class) or every label's (multi-label)."""
    if task.multilabel:
        confidence = scores.ravel()
        correct = gold_matrix(task, gold).ravel().astype(np.float32)
    else:
        best = scores.argmax(axis=1)
        confidence = scores[np.arange(len(best)), best]
        truth = np.array([gold_indices(task, g)[0] for g in gold])
        correct = (best == truth).astype(np.float32)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, BINS - 1)
    error = 0.0
    for b in range(BINS):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(
                float(confidence[inside].mean()) - float(correct[inside].mean())
            )
    return round(error, 4)


def probabilities(task: TaskHead, logits: torch.Tensor) -> npt.NDArray[np.float32]:
    """A head's scores from its logits (softmax or per-label sigmoid)."""
    z = logits.detach().float()
    probs = z.sigmoid() if task.multilabel else z.softmax(-1)
    return np.asarray(probs.numpy(), dtype=np.float32)


def calibrate_head(
    task: TaskHead, head: nn.Linear, logits: torch.Tensor, gold: list[Gold]
) -> tuple[torch.Tensor, dict[str, object]]:
    """Fit and fold `task`'s temperature(s) into `head` from validation `logits`; return the
    calibrated logits and the figures (temperatures, ECE before and after)."""
    before = expected_calibration_error(task, probabilities(task, logits), gold)
    if len(gold) < MIN_ROWS:
        return logits, {"temperature": None, "val_ece_before": before, "val_rows": len(gold)}
    temperatures = fit_temperatures(task, logits, gold)
    scale_head(head, temperatures)
    calibrated = logits / torch.tensor(temperatures)
    after = expected_calibration_error(task, probabilities(task, calibrated), gold)
    figures: dict[str, object] = {
        "temperature": list(temperatures) if task.multilabel else temperatures[0],
        "val_ece_before": before,
        "val_ece_after": after,
        "val_rows": len(gold),
    }
    return calibrated, figures
