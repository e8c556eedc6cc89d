"""The multi-task loss: a batch mixes tasks, and each head's loss counts only the rows
labeled for its task (the others carry IGNORE), optionally class-balanced.

Multi-class heads use cross-entropy. Multi-label heads use a sigmoid per label with binary
cross-entropy, each label's positives weighted by sqrt(negatives / positives): rare labels
(GoEmotions' grief: 0.2% of rows) would otherwise learn to never fire, while the full
ratio overshoots into firing on everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from serving.multihead import MultiHeadModel
from serving.tasks import TaskHead, gold_indices
from serving.training.data import LabeledText

IGNORE = -100
MAX_POS_WEIGHT = 30.0


def task_targets(tasks: Sequence[TaskHead], rows: Sequence[LabeledText]) -> dict[str, torch.Tensor]:
    """Each task's targets per row: a label index (multi-class) or a 0/1 row per label
    (multi-label); IGNORE where the row has no label for that task."""
    targets: dict[str, torch.Tensor] = {}
    for t in tasks:
        if t.multilabel:
            y = torch.full((len(rows), len(t.labels)), float(IGNORE))
            for i, r in enumerate(rows):
                if t.name in r.labels:
                    y[i] = 0.0
                    y[i, gold_indices(t, r.labels[t.name])] = 1.0
            targets[t.name] = y
        else:
            targets[t.name] = torch.tensor(
                [
                    gold_indices(t, r.labels[t.name])[0] if t.name in r.labels else IGNORE
                    for r in rows
                ]
            )
    return targets


def labeled_rows(targets: torch.Tensor) -> torch.Tensor:
    """The mask of rows that carry a label for the task."""
    return targets[:, 0] != IGNORE if targets.ndim == 2 else targets != IGNORE


def task_weights(
    tasks: Sequence[TaskHead], targets: dict[str, torch.Tensor], balanced: bool
) -> dict[str, torch.Tensor | None]:
    """Each task's weights for the loss: balanced class weights when asked (multi-class),
    positive weights per label (multi-label, always)."""
    weights: dict[str, torch.Tensor | None] = {}
    for t in tasks:
        if t.multilabel:
            weights[t.name] = positive_weights(targets[t.name])
        else:
            weights[t.name] = class_weights(targets[t.name], len(t.labels)) if balanced else None
    return weights


def class_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Balanced weights n / (k * count) over the labeled rows (ignored rows excluded)."""
    labeled = targets[targets != IGNORE]
    counts = torch.bincount(labeled, minlength=n_classes).float().clamp(min=1)
    return counts.sum() / (n_classes * counts)


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-label sqrt(negatives / positives) over the labeled rows, capped."""
    y = targets[labeled_rows(targets)]
    positives = y.sum(dim=0).clamp(min=1.0)
    negatives = (y.shape[0] - y.sum(dim=0)).clamp(min=1.0)
    return (negatives / positives).sqrt().clamp(max=MAX_POS_WEIGHT)


def head_loss(
    task: TaskHead, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """One head's mean loss over the rows labeled for its task."""
    if task.multilabel:
        keep = labeled_rows(y)
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float()[keep], y[keep], pos_weight=weight
        )
    return nn.functional.cross_entropy(logits.float(), y, weight=weight, ignore_index=IGNORE)


def multitask_loss(
    outputs: Sequence[torch.Tensor],
    targets: dict[str, torch.Tensor],
    model: MultiHeadModel,
    weights: dict[str, torch.Tensor | None],
) -> torch.Tensor:
    """Sum over tasks of each head's mean loss on its own rows, weighted by its share of rows."""
    total = torch.zeros((), dtype=torch.float32, device=outputs[0].device)
    counts = {name: int(labeled_rows(y).sum()) for name, y in targets.items()}
    rows = sum(counts.values()) or 1
    for task, logits in zip(model.tasks, outputs, strict=False):
        n = counts[task.name]
        if n == 0:
            continue
        loss = head_loss(task, logits, targets[task.name], weights[task.name])
        total = total + loss * (n / rows)
    return total
