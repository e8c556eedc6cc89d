"""The PyTorch model's predictions during training: labels per head, and a classification
report per data set (validation for early stopping, or test), before any export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from serving.multihead import MultiHeadModel
from serving.training.batching import pad, tokenize
from serving.training.data import TaskData, data_name
from serving.training.evaluation import classification_report


@torch.no_grad()  # type: ignore[untyped-decorator]
def predict_labels(
    model: MultiHeadModel,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    precision: str = "fp32",
    batch_size: int = 64,
) -> dict[str, list[str]]:
    """Every head's predicted label for each text, in order (PyTorch, eval mode)."""
    was_training = model.training
    model.eval()
    ids = tokenize(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    winners = {t.name: [0] * len(ids) for t in model.tasks}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs = model(input_ids, mask)
        for task, logits in zip(model.tasks, outputs, strict=False):
            for i, best in zip(idx, logits.float().argmax(dim=1).tolist(), strict=True):
                winners[task.name][i] = best
    model.train(was_training)
    return {t.name: [t.labels[k] for k in winners[t.name]] for t in model.tasks}


def evaluate_sets(
    model: MultiHeadModel,
    tokenizer: Any,
    sets: Sequence[TaskData],
    max_length: int,
    *,
    split: Literal["val", "test"] = "val",
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
    """A classification report per data set (its own task) on the chosen split."""
    reports: dict[str, dict[str, Any]] = {}
    for data in sets:
        rows = data.val if split == "val" else data.test
        if not rows:
            continue
        predicted = predict_labels(
            model, tokenizer, [r.text for r in rows], max_length, precision=precision
        )[data.task.name]
        gold = [r.labels[data.task.name] for r in rows]
        reports[data_name(data)] = classification_report(gold, predicted, data.task.labels)
    return reports
