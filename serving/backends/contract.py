"""The classifier contract every inference backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from serving.tasks import TaskHead


@dataclass(frozen=True)
class TaskPrediction:
    """A head's answer for one text: the winning label, its score and every class score.

    A multi-label head also answers `labels`: those whose score reaches their threshold
    (best first, possibly none); `label` is then its best-scoring label.
    """

    label: str
    score: float
    scores: dict[str, float]
    labels: tuple[str, ...] | None = None

    def document(self) -> dict[str, object]:
        """The head's part of a labeled output document."""
        if self.labels is not None:
            return {"labels": list(self.labels), "scores": self.scores}
        return {"label": self.label, "score": self.score, "scores": self.scores}


@dataclass(frozen=True)
class ModelInfo:
    """What a backend serves: stamped on every output."""

    name: str
    version: str
    variant: str
    tasks: tuple[TaskHead, ...]
    max_length: int


@dataclass(frozen=True)
class Prediction:
    """Every head's answer for one text, plus the pooled embedding and the model that
    answered (a backend may switch versions while a later batch is queued)."""

    tasks: dict[str, TaskPrediction]
    truncated: bool
    embedding: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    model: ModelInfo | None = field(default=None, repr=False, compare=False)


class InferenceError(RuntimeError):
    """The backend failed to classify a batch. `retriable` says whether trying again may help."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


@runtime_checkable
class Classifier(Protocol):
    """`async classify(texts) -> predictions`, one prediction per text, in order."""

    @property
    def info(self) -> ModelInfo:
        """The model this backend serves right now."""
        ...

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch of texts."""
        ...

    async def close(self) -> None:
        """Release the backend's resources."""
        ...


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: npt.NDArray[np.float32] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Element-wise logistic function."""
    probs: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return probs


def task_probabilities(task: TaskHead, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A head's scores from its logits: softmax (multi-class) or per-label sigmoid."""
    return sigmoid(logits) if task.multilabel else softmax(logits)


def task_prediction(task: TaskHead, p: npt.NDArray[np.float32]) -> TaskPrediction:
    """One text's answer for `task` from its scores."""
    best = int(p.argmax())
    chosen = None
    if task.multilabel:
        above = [i for i in range(len(task.labels)) if p[i] >= task.threshold(i)]
        chosen = tuple(task.labels[i] for i in sorted(above, key=lambda i: -p[i]))
    return TaskPrediction(
        label=task.labels[best],
        score=round(float(p[best]), 6),
        scores={lab: round(float(v), 6) for lab, v in zip(task.labels, p, strict=True)},
        labels=chosen,
    )


def predictions_from_logits(
    tasks: Sequence[TaskHead],
    logits: dict[str, npt.NDArray[np.float32]],
    truncated: Sequence[bool],
    embeddings: npt.NDArray[np.float32] | None = None,
    model: ModelInfo | None = None,
) -> list[Prediction]:
    """Turn per-head logits (batch x classes) into per-text predictions (by `model`)."""
    probs = {task.name: task_probabilities(task, logits[task.name]) for task in tasks}
    out: list[Prediction] = []
    for row, was_truncated in enumerate(truncated):
        per_task = {task.name: task_prediction(task, probs[task.name][row]) for task in tasks}
        emb = embeddings[row] if embeddings is not None else None
        out.append(
            Prediction(tasks=per_task, truncated=bool(was_truncated), embedding=emb, model=model)
        )
    return out


def predictions_from_chunks(
    tasks: Sequence[TaskHead],
    truncated: Sequence[bool],
    chunks: Sequence[tuple[Sequence[int], dict[str, npt.NDArray[np.float32]]]],
    model: ModelInfo | None = None,
) -> list[Prediction]:
    """Reassemble per-chunk graph outputs (`<task>_logits`, `embedding`) into input order.

    Each chunk is (the input rows it holds, its outputs by name).
    """
    n = len(truncated)
    logits = {t.name: np.empty((n, len(t.labels)), dtype=np.float32) for t in tasks}
    embeddings: npt.NDArray[np.float32] | None = None
    for rows, outputs in chunks:
        index = list(rows)
        for t in tasks:
            logits[t.name][index] = outputs[f"{t.name}_logits"]
        if embeddings is None:
            embeddings = np.empty((n, outputs["embedding"].shape[1]), dtype=np.float32)
        embeddings[index] = outputs["embedding"]
    return predictions_from_logits(tasks, logits, truncated, embeddings, model)
