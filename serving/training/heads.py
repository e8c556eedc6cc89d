"""The fast training path: frozen encoder, one linear head per task, fitted on embeddings."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from serving.multihead import MultiHeadModel, load_encoder
from serving.tasks import DEFAULT_TASKS, TaskHead
from serving.training.calibration import calibrate_head, probabilities
from serving.training.data import LabeledText, read_labeled, seed_data_path, split_holdout
from serving.training.evaluation import task_report
from serving.training.loss import class_weights, positive_weights, task_targets
from serving.training.onnx_embedding import MIN_TEXTS, embed_with_onnx
from serving.training.prediction import answers
from serving.training.thresholds import choose_thresholds

Progress = Callable[[str, int, int], None]


@torch.no_grad()  # type: ignore[untyped-decorator]
def embed_texts(
    model: MultiHeadModel,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Pooled embeddings of `texts`, in order (length-sorted batches for speed)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty((len(texts), model.hidden_size))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out[idx] = model.embed(enc["input_ids"], enc["attention_mask"])
        if progress:
            progress("embedding", min(start + batch_size, len(order)), len(order))
    return out


def fit_linear_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    n_classes: int,
    *,
    steps: int = 400,
    seed: int = 0,
) -> nn.Linear:
    """Logistic regression on frozen features (full-batch Adam): multinomial with balanced
    class weights for label indices, or one sigmoid per label for 0/1 label rows (2-D
    targets), positives weighted as in fine-tuning (serving.training.loss)."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], n_classes)
    loss_fn: nn.Module
    if targets.ndim == 2:
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=positive_weights(targets))
    else:
        loss_fn = nn.CrossEntropyLoss(weight=class_weights(targets, n_classes))
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(head(features), targets)
        loss.backward()
        opt.step()
    return head


def _fit_task(
    model: MultiHeadModel,
    task: TaskHead,
    train: tuple[torch.Tensor, Sequence[LabeledText]],
    held: tuple[torch.Tensor, Sequence[LabeledText]],
    seed: int,
) -> dict[str, Any]:
    """Fit `task`'s head on the rows that carry its label; its held-out report figures
    (temperature-scaled on the held-out rows; multi-label: thresholds chosen there too,
    on the calibrated scores, then set on the model)."""
    (train_x, train_rows), (held_x, held_rows) = train, held
    tr = [i for i, r in enumerate(train_rows) if task.name in r.labels]
    he = [i for i, r in enumerate(held_rows) if task.name in r.labels]
    if not tr:
        raise ValueError(f"no training rows carry a {task.name!r} label")
    targets = task_targets([task], [train_rows[i] for i in tr])[task.name]
    if targets.ndim == 2:
        targets = targets.float()
    head = fit_linear_head(train_x[tr], targets, len(task.labels), seed=seed)
    if not he:
        model.heads[task.name].load_state_dict(head.state_dict())
        return {"heldout_rows": 0, "heldout_accuracy": None}
    with torch.no_grad():
        logits = head(held_x[he]).float()
    gold = [held_rows[i].labels[task.name] for i in he]
    # Calibrated on the held-out rows, then thresholds chosen on the calibrated scores.
    logits, calibration = calibrate_head(task, head, logits, gold)
    model.heads[task.name].load_state_dict(head.state_dict())
    scores = probabilities(task, logits)
    if task.multilabel:
        task = dataclasses.replace(task, thresholds=choose_thresholds(task, scores, gold))
        model.tasks = tuple(task if t.name == task.name else t for t in model.tasks)
    report = task_report(task, gold, answers(task, scores))
    figures = {k: report[k] for k in ("accuracy", "macro_recall", "macro_f1")}
    return {
        "heldout_rows": len(he),
        **figures,
        "heldout_accuracy": report["accuracy"],
        "calibration": calibration,
    }


def fit_heads(
    model: MultiHeadModel,
    tokenizer: Any,
    train: Sequence[LabeledText],
    held: Sequence[LabeledText],
    *,
    max_length: int,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit every head of `model` on its frozen encoder's embeddings; return held-out figures.

    A row trains only the heads of the tasks it carries a label for. Multi-label heads get
    their thresholds from the held-out rows. Large sets are embedded through the exported
    int8 graph (serving.training.onnx_embedding), small ones by PyTorch.
    """
    texts = [r.text for r in train] + [r.text for r in held]
    started = time.perf_counter()
    if len(texts) >= MIN_TEXTS:
        features = embed_with_onnx(model, tokenizer, texts, max_length, progress=progress)
        embedder = "onnx int8"
    else:
        features = embed_texts(model, tokenizer, texts, max_length, progress=progress)
        embedder = "pytorch fp32"
    train_x, held_x = features[: len(train)], features[len(train) :]
    report: dict[str, Any] = {
        "train_rows": len(train),
        "heldout_rows": len(held),
        "embedding": {"by": embedder, "seconds": round(time.perf_counter() - started, 1)},
    }
    for task in model.tasks:
        report[task.name] = _fit_task(model, task, (train_x, train), (held_x, held), seed)
        if progress:
            progress(f"head {task.name}", 1, 1)
    return report


def train_heads(
    data: Path | None = None,
    *,
    checkpoint: str | None = None,
    tasks: Sequence[TaskHead] = DEFAULT_TASKS,
    max_length: int = 128,
    holdout: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[MultiHeadModel, Any, dict[str, Any]]:
    """Fit every head on the frozen encoder from a multi-task JSONL file (the seed set by default).

    Returns (model, tokenizer, held-out report).
    """
    path = data or seed_data_path()
    train, held = split_holdout(read_labeled(path, tasks), holdout)
    encoder, tokenizer = load_encoder(checkpoint)
    model = MultiHeadModel(encoder, tasks)
    report = fit_heads(
        model, tokenizer, train, held, max_length=max_length, seed=seed, progress=progress
    )
    return model, tokenizer, {"data": str(path), **report}
