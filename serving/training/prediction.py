"""The PyTorch model's predictions during training: scores and answers per head, thresholds
for multi-label heads, and a report per data set (validation or test), before any export."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from serving.multihead import MultiHeadModel
from serving.tasks import Gold, TaskHead
from serving.training.batching import pad, tokenize
from serving.training.calibration import calibrate_head, probabilities
from serving.training.data import TaskData, data_name
from serving.training.device import autocast, model_device
from serving.training.evaluation import task_report
from serving.training.thresholds import choose_thresholds, decide


@torch.no_grad()  # type: ignore[untyped-decorator]
def predict_logits(
    model: MultiHeadModel,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    precision: str = "fp32",
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Every head's logits (rows x labels), in text order (PyTorch, eval mode), on the CPU;
    computed on the device the model is on."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    ids = tokenize(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = {t.name: torch.zeros((len(ids), len(t.labels))) for t in model.tasks}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id)
        with autocast(device, precision):
            outputs = model(input_ids.to(device), mask.to(device))
        for task, logits in zip(model.tasks, outputs, strict=False):
            out[task.name][idx] = logits.float().cpu()
    model.train(was_training)
    return out


def predict_scores(
    model: MultiHeadModel, tokenizer: Any, texts: Sequence[str], max_length: int, **kw: Any
) -> dict[str, npt.NDArray[np.float32]]:
    """Every head's scores (rows x labels: softmax or sigmoid by kind), in text order."""
    logits = predict_logits(model, tokenizer, texts, max_length, **kw)
    return {t.name: probabilities(t, logits[t.name]) for t in model.tasks}


def answers(task: TaskHead, scores: npt.NDArray[np.float32]) -> list[Gold]:
    """Each row's answer: the best label (multi-class) or the labels over threshold."""
    if task.multilabel:
        return list(decide(task, scores))
    return [task.labels[int(k)] for k in scores.argmax(axis=1)]


def predict_labels(
    model: MultiHeadModel, tokenizer: Any, texts: Sequence[str], max_length: int, **kw: Any
) -> dict[str, list[Gold]]:
    """Every head's answer for each text, in order (PyTorch, eval mode)."""
    scores = predict_scores(model, tokenizer, texts, max_length, **kw)
    return {t.name: answers(t, scores[t.name]) for t in model.tasks}


def calibrate(
    model: MultiHeadModel,
    tokenizer: Any,
    sets: Sequence[TaskData],
    max_length: int,
    *,
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
    """Temperature-scale every head on its sets' validation rows (folded into its weights),
    then choose multi-label thresholds on the calibrated scores; the figures per task."""
    figures: dict[str, dict[str, Any]] = {}
    tasks = list(model.tasks)
    for i, task in enumerate(tasks):
        rows = [r for data in sets if data.task.name == task.name for r in data.val]
        if not rows:
            continue
        logits = predict_logits(
            model, tokenizer, [r.text for r in rows], max_length, precision=precision
        )[task.name]
        gold = [r.labels[task.name] for r in rows]
        calibrated, figures[task.name] = calibrate_head(task, model.heads[task.name], logits, gold)
        if task.multilabel:
            cuts = choose_thresholds(task, probabilities(task, calibrated), gold)
            tasks[i] = dataclasses.replace(task, thresholds=cuts)
            figures[task.name]["thresholds"] = list(cuts)
    model.tasks = tuple(tasks)
    return figures


def evaluate_sets(
    model: MultiHeadModel,
    tokenizer: Any,
    sets: Sequence[TaskData],
    max_length: int,
    *,
    split: Literal["val", "test"] = "val",
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
    """A report per data set (its own task) on the chosen split.

    On validation, a multi-label head is judged at the thresholds best for that split
    (the ones export will choose), so early stopping compares like with like.
    """
    reports: dict[str, dict[str, Any]] = {}
    for data in sets:
        rows = data.val if split == "val" else data.test
        if not rows:
            continue
        task = next(t for t in model.tasks if t.name == data.task.name)
        scores = predict_scores(
            model, tokenizer, [r.text for r in rows], max_length, precision=precision
        )[task.name]
        gold = [r.labels[task.name] for r in rows]
        if task.multilabel and split == "val":
            task = dataclasses.replace(task, thresholds=choose_thresholds(task, scores, gold))
        reports[data_name(data)] = task_report(task, gold, answers(task, scores))
    return reports
