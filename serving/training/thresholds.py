"""Per-label decision thresholds for multi-label heads, chosen on validation rows.

Each label's threshold is the score cut that maximises that label's F1 on the validation
split (ties go to the higher cut, which fires less); labels without validation positives
keep 0.5. Chosen once per trained version and exported with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from serving.tasks import DEFAULT_THRESHOLD, Gold, TaskHead, gold_indices

CANDIDATES = np.round(np.arange(0.05, 0.951, 0.025), 3)


def gold_matrix(task: TaskHead, gold: Sequence[Gold]) -> npt.NDArray[np.bool_]:
    """Rows x labels: True where the row's gold set holds the label."""
    out = np.zeros((len(gold), len(task.labels)), dtype=bool)
    for i, g in enumerate(gold):
        out[i, gold_indices(task, g)] = True
    return out


def best_threshold(scores: npt.NDArray[np.float32], truth: npt.NDArray[np.bool_]) -> float:
    """The candidate cut with the highest F1 for one label (0.5 without positives)."""
    positives = int(truth.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    fired = scores[None, :] >= CANDIDATES[:, None]
    tp = (fired & truth[None, :]).sum(axis=1)
    f1 = 2 * tp / (fired.sum(axis=1) + positives)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(CANDIDATES[best])


def choose_thresholds(
    task: TaskHead, scores: npt.NDArray[np.float32], gold: Sequence[Gold]
) -> tuple[float, ...]:
    """One threshold per label of `task`, from its validation `scores` (rows x labels)."""
    truth = gold_matrix(task, gold)
    return tuple(best_threshold(scores[:, j], truth[:, j]) for j in range(len(task.labels)))


def decide(task: TaskHead, scores: npt.NDArray[np.float32]) -> list[tuple[str, ...]]:
    """Each row's labels at or above their threshold (multi-label heads)."""
    cuts = np.array([task.threshold(j) for j in range(len(task.labels))], dtype=np.float32)
    return [tuple(task.labels[j] for j in np.flatnonzero(row >= cuts)) for row in scores]
