"""The multi-task loss: a batch mixes tasks, and each head's loss counts only the rows
labeled for its task (the others carry IGNORE), optionally class-balanced."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from serving.multihead import MultiHeadModel
from serving.tasks import TaskHead
from serving.training.data import LabeledText

IGNORE = -100


def task_targets(tasks: Sequence[TaskHead], rows: Sequence[LabeledText]) -> dict[str, torch.Tensor]:
    """Each task's label index per row, IGNORE where the row has no label for that task."""
    return {
        t.name: torch.tensor(
            [t.labels.index(r.labels[t.name]) if t.name in r.labels else IGNORE for r in rows]
        )
        for t in tasks
    }


def task_weights(
    tasks: Sequence[TaskHead], targets: dict[str, torch.Tensor], balanced: bool
) -> dict[str, torch.Tensor | None]:
    """Each task's class weights for the loss: balanced when asked, else None (uniform)."""
    return {
        t.name: class_weights(targets[t.name], len(t.labels)) if balanced else None for t in tasks
    }


def class_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Balanced weights n / (k * count) over the labeled rows (ignored rows excluded)."""
    labeled = targets[targets != IGNORE]
    counts = torch.bincount(labeled, minlength=n_classes).float().clamp(min=1)
    return counts.sum() / (n_classes * counts)


def multitask_loss(
    outputs: Sequence[torch.Tensor],
    targets: dict[str, torch.Tensor],
    model: MultiHeadModel,
    weights: dict[str, torch.Tensor | None],
) -> torch.Tensor:
    """Sum over tasks of each head's mean loss on its own rows, weighted by its share of rows."""
    total = torch.zeros((), dtype=torch.float32)
    rows = sum(int((t != IGNORE).sum()) for t in targets.values()) or 1
    for task, logits in zip(model.tasks, outputs, strict=False):
        y = targets[task.name]
        n = int((y != IGNORE).sum())
        if n == 0:
            continue
        loss = nn.functional.cross_entropy(
            logits.float(), y, weight=weights[task.name], ignore_index=IGNORE
        )
        total = total + loss * (n / rows)
    return total
