"""What the model watch reads from `feeds.labeled`, validated once where it enters.

Any producer with access can write to the labeled topic, so a document is checked whole
(pydantic) before any detector sees it: one wrong-width or non-finite embedding would
otherwise break the embedding test for every prediction after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from online.feedback_records import Observation
from streams.kafka.records import decode_embedding
from streams.messages import MAX_ID_CHARS

# Why the watch dead-letters a record (stable strings: metric labels, DLQ headers).
INVALID_LABELED_RECORD = "invalid_labeled_record"
INVALID_DECISION = "invalid_decision"
INVALID_JOB = "invalid_job"
MAX_EMBEDDING_WIDTH = 8192
MAX_ERROR_CHARS = 500

_Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _TaskLabel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    label: _Name
    score: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _ModelRef(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)] | int


class LabeledPrediction(BaseModel):
    """The part of a labeled document the watch reads (the rest is ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    text: str | None = None
    labels: Annotated[dict[_Name, _TaskLabel], Field(min_length=1, max_length=64)]
    embedding: Annotated[str, StringConstraints(max_length=8 * MAX_EMBEDDING_WIDTH)] | None = None
    model: _ModelRef


def read_prediction(
    value: bytes | None,
    labels: Mapping[str, Sequence[str]],
    widths: Mapping[str, int],
    now: float,
) -> tuple[Observation, dict[str, float]] | str:
    """A labeled record as the watch's observation and per-task scores, or why not.

    `labels` are the watched tasks' label sets (other tasks pass through unchecked);
    `widths` the embedding width already seen per model version.
    """
    if not value:
        return "record has no value"
    try:
        doc = LabeledPrediction.model_validate_json(value)
    except ValidationError as exc:
        return _first_error(exc)
    for task, got in doc.labels.items():
        if task in labels and got.label not in labels[task]:
            return f"labels.{task}.label {got.label[:64]!r} is not one of {list(labels[task])}"
    embedding = None
    if doc.embedding is not None:
        try:
            embedding = decode_embedding(doc.embedding)
        except ValueError as exc:
            return str(exc)
        problem = _embedding_problem(embedding, widths.get(str(doc.model.version)))
        if problem is not None:
            return problem
    obs = Observation(
        id=doc.id,
        text=doc.text,
        labels={task: v.label for task, v in doc.labels.items()},
        embedding=embedding,
        model_version=str(doc.model.version),
        seen_at=now,
    )
    return obs, {task: v.score for task, v in doc.labels.items()}


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
