"""The records of the feedback join: a feedback label, a prediction kept for it, the two
joined; how a feedback record is parsed from untrusted bytes, and what keeping each costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Why a feedback record is dead-lettered when it cannot be parsed (a stable string: metric
# labels, headers).
INVALID_FEEDBACK = "invalid_feedback"
MAX_FEEDBACK_BYTES = 64 * 1024
MAX_ID_CHARS = 512
MAX_TEXT_CHARS = 20_000
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Feedback:
    """A true label that arrived for item `id`, optionally with the item's text."""

    id: str
    task: str
    label: str
    text: str | None = None
    # Where the record came from (topic, partition, offset), for its dead letter.
    origin: tuple[str, int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Observation:
    """What the served model said about one item, kept until its feedback may arrive."""

    id: str
    text: str | None
    labels: dict[str, str]
    embedding: npt.NDArray[np.float32] | None
    model_version: str
    seen_at: float


@dataclass(frozen=True)
class Joined:
    """A feedback label with the prediction it belongs to."""

    feedback: Feedback
    observation: Observation


def _known_labels(info: ValidationInfo) -> Mapping[str, Sequence[str]]:
    labels: Mapping[str, Sequence[str]] = (info.context or {}).get("labels", {})
    return labels


class _FeedbackRecord(BaseModel):
    """A feedback record as it arrives; the task and label checks need the known labels
    as validation context."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)] | int
    task: str
    label: str
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None

    @field_validator("id")
    @classmethod
    def _id_as_text(cls, value: str | int) -> str:
        # Bits first: str() of a huge integer is slow, or refused beyond 4300 digits.
        if isinstance(value, int) and (
            value.bit_length() > 4 * MAX_ID_CHARS or len(str(value)) > MAX_ID_CHARS
        ):
            raise PydanticCustomError("feedback", f"'id' is over {MAX_ID_CHARS} digits")
        return str(value)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str, info: ValidationInfo) -> str:
        labels = _known_labels(info)
        if value not in labels:
            raise PydanticCustomError(
                "feedback",
                "'task' must be one of {tasks}, got {got}",
                {"tasks": str(sorted(labels)), "got": repr(value[:100])},
            )
        return value

    @field_validator("label")
    @classmethod
    def _known_label(cls, value: str, info: ValidationInfo) -> str:
        task = info.data.get("task")
        known = _known_labels(info).get(task, ()) if isinstance(task, str) else ()
        if task is not None and value not in known:
            raise PydanticCustomError(
                "feedback",
                "'label' must be one of {labels} for {task}, got {got}",
                {"labels": str(list(known)), "task": task, "got": repr(value[:100])},
            )
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("feedback", "'text' must not be blank")
        return value


# What each field must be, for errors pydantic raises before our validators run.
_RULES = {
    "id": f"'id' must be a non-empty string (at most {MAX_ID_CHARS} characters) or an integer",
    "task": "'task' must be one of {tasks}",
    "label": "'label' must be a label (a string) of the task",
    "text": f"'text' must be a non-empty string of at most {MAX_TEXT_CHARS} characters "
    "when present",
}


def _reason(exc: ValidationError, labels: Mapping[str, Sequence[str]]) -> str:
    """The first problem of a record, short enough for a dead-letter header."""
    first = exc.errors(include_url=False)[0]
    loc = first["loc"]
    if first["type"] == "feedback":
        why = first["msg"]
    elif first["type"] == "json_invalid":
        why = f"invalid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    elif not loc:
        why = f"expected a JSON object, got {_json_type(first.get('input'))}"
    else:
        why = _RULES.get(str(loc[0]), f"{loc[0]!r} is invalid").format(tasks=sorted(labels))
        if first["type"] == "missing":
            why = f"'{loc[0]}' is missing: {why}"
    return why[:MAX_REASON_CHARS]


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse_feedback(
    value: bytes | None,
    labels: Mapping[str, Sequence[str]],
    origin: tuple[str, int, int] | None = None,
) -> Feedback | str:
    """A feedback record `{id, task, label[, text]}`, or why it is unusable (never raises)."""
    if not value:
        return "record has no value"
    if len(value) > MAX_FEEDBACK_BYTES:
        return f"{len(value)} bytes exceeds the {MAX_FEEDBACK_BYTES}-byte feedback limit"
    try:
        rec = _FeedbackRecord.model_validate_json(value, context={"labels": labels})
    except ValidationError as exc:
        return _reason(exc, labels)
    return Feedback(str(rec.id), rec.task, rec.label, rec.text, origin)


# Per kept record, besides its text and embedding: the objects, dict slots and fields.
RECORD_OVERHEAD_BYTES = 200


def observation_bytes(obs: Observation) -> int:
    """What keeping a prediction costs, roughly: its text, embedding, labels and overhead."""
    text = len(obs.text.encode("utf-8", "replace")) if obs.text else 0
    embedding = obs.embedding.nbytes if obs.embedding is not None else 0
    labels = sum(len(k) + len(v) for k, v in obs.labels.items())
    return RECORD_OVERHEAD_BYTES + len(obs.id) + text + embedding + labels


def feedback_bytes(fb: Feedback) -> int:
    """What keeping a waiting feedback record costs, roughly."""
    text = len(fb.text.encode("utf-8", "replace")) if fb.text else 0
    return RECORD_OVERHEAD_BYTES + len(fb.id) + len(fb.task) + len(fb.label) + text
