"""What the model watch reads from `feeds.labeled`, validated once where it enters.

Any producer with access can write to the labeled topic, so a document is checked whole
(pydantic) before any detector sees it: one wrong-width or non-finite embedding would
otherwise break the embedding test for every prediction after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
)

from online.feedback_records import Observation, TaskScore
from serving.tasks import Gold, TaskHead
from streams.kafka.records import decode_embedding
from streams.messages import MAX_ID_CHARS

# Why the watch dead-letters a record (stable strings: metric labels, DLQ headers).
INVALID_LABELED_RECORD = "invalid_labeled_record"
INVALID_DECISION = "invalid_decision"
INVALID_JOB = "invalid_job"
MAX_EMBEDDING_WIDTH = 8192
MAX_ERROR_CHARS = 500
MAX_TASK_LABELS = 256

_Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _TaskLabel(BaseModel):
    """A multi-class task's answer: its label and that label's score."""

    model_config = ConfigDict(strict=True, extra="ignore")
    label: _Name
    score: _Score


class _TaskLabels(BaseModel):
    """A multi-label task's answer: the labels above their thresholds (maybe none) and
    every label's score."""

    model_config = ConfigDict(strict=True, extra="ignore")
    labels: Annotated[list[_Name], Field(max_length=MAX_TASK_LABELS)]
    scores: Annotated[dict[_Name, _Score], Field(max_length=MAX_TASK_LABELS)]


def _shape(value: Any) -> str:
    """Which answer a task's part is: `labels` makes it multi-label."""
    if isinstance(value, dict):
        return "multilabel" if "labels" in value else "multiclass"
    return "multilabel" if isinstance(value, _TaskLabels) else "multiclass"


_TaskAnswer = Annotated[
    Annotated[_TaskLabel, Tag("multiclass")] | Annotated[_TaskLabels, Tag("multilabel")],
    Discriminator(_shape),
]


class _ModelRef(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)] | int


class LabeledPrediction(BaseModel):
    """The part of a labeled document the watch reads (the rest is ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    text: str | None = None
    labels: Annotated[dict[_Name, _TaskAnswer], Field(min_length=1, max_length=64)]
    embedding: Annotated[str, StringConstraints(max_length=8 * MAX_EMBEDDING_WIDTH)] | None = None
    model: _ModelRef


def read_prediction(
    value: bytes | None,
    tasks: Mapping[str, TaskHead],
    widths: Mapping[str, int],
    now: float,
) -> tuple[Observation, dict[str, TaskScore]] | str:
    """A labeled record as the watch's observation and per-task scores, or why not.

    `tasks` are the watched heads by name: each one's answer must have its kind's shape
    and name only its labels (other tasks pass through unchecked). A multi-class task's
    score is its label's; a multi-label task's is every label's. `widths` is the embedding
    width already seen per model version.
    """
    if not value:
        return "record has no value"
    try:
        doc = LabeledPrediction.model_validate_json(value)
    except ValidationError as exc:
        return _first_error(exc)
    for task, got in doc.labels.items():
        problem = _answer_problem(task, tasks.get(task), got)
        if problem is not None:
            return problem
    embedding = None
    if doc.embedding is not None:
        try:
            embedding = decode_embedding(doc.embedding)
        except ValueError as exc:
            return str(exc)
        problem = _embedding_problem(embedding, widths.get(str(doc.model.version)))
        if problem is not None:
            return problem
    labels: dict[str, Gold] = {}
    scores: dict[str, TaskScore] = {}
    for task, got in doc.labels.items():
        if isinstance(got, _TaskLabels):
            labels[task], scores[task] = tuple(got.labels), dict(got.scores)
        else:
            labels[task], scores[task] = got.label, got.score
    obs = Observation(
        id=doc.id,
        text=doc.text,
        labels=labels,
        embedding=embedding,
        model_version=str(doc.model.version),
        seen_at=now,
    )
    return obs, scores


def _answer_problem(task: str, head: TaskHead | None, got: _TaskLabel | _TaskLabels) -> str | None:
    """Why a watched task's answer does not fit its head, or None."""
    if head is None:
        return None
    known = list(head.labels)
    if not isinstance(got, _TaskLabels):
        if head.multilabel:
            return f"labels.{task}: a multi-label task answers {{labels, scores}}, not a label"
        if got.label not in head.labels:
            return f"labels.{task}.label {got.label[:64]!r} is not one of {known}"
        return None
    if not head.multilabel:
        return f"labels.{task}: a multi-class task answers {{label, score}}, not labels"
    for where, names in (("labels", got.labels), ("scores", list(got.scores))):
        unknown = [name for name in names if name not in head.labels]
        if unknown:
            return f"labels.{task}.{where}: {unknown[0][:64]!r} is not one of {known}"
    if len(set(got.labels)) != len(got.labels):
        return f"labels.{task}.labels: a label is named more than once"
    return None


def _embedding_problem(vector: np.ndarray, width: int | None) -> str | None:
    if not 0 < vector.size <= MAX_EMBEDDING_WIDTH:
        return f"embedding has {vector.size} values, expected 1 to {MAX_EMBEDDING_WIDTH}"
    if width is not None and vector.size != width:
        return f"embedding has {vector.size} values, this model version's have {width}"
    if not np.isfinite(vector).all():
        return "embedding holds non-finite values"
    return None


def _first_error(exc: ValidationError) -> str:
    """pydantic's first complaint, as one bounded line (it goes into a DLQ header)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"[:MAX_ERROR_CHARS]
