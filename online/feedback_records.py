"""The records of the feedback join: a feedback label, a prediction kept for it, the two
joined; how a feedback record is parsed from untrusted bytes, and what keeping each costs.

A feedback record names one of the served model's tasks: `{"id", "task", "label"[, "text"]}`
for a multi-class task, `{"id", "task", "labels": [...][, "text"]}` for a multi-label one
(every label the item carries, possibly none: an empty list says none of them applies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from serving.tasks import Gold, TaskHead

# Why a feedback record is dead-lettered when it cannot be parsed (a stable string: metric
# labels, headers).
INVALID_FEEDBACK = "invalid_feedback"
MAX_FEEDBACK_BYTES = 64 * 1024
MAX_ID_CHARS = 512
MAX_TEXT_CHARS = 20_000
MAX_REASON_CHARS = 300

# What the served model's scores say about one task of an item: its label's score
# (multi-class), or every label's score (multi-label).
TaskScore = float | Mapping[str, float]


@dataclass(frozen=True)
class Feedback:
    """A true answer that arrived for item `id`, optionally with the item's text: a label
    (multi-class task) or the tuple of labels the item carries, in the task's label order
    (multi-label task)."""

    id: str
    task: str
    label: Gold
    text: str | None = None
    # Where the record came from (topic, partition, offset), for its dead letter.
    origin: tuple[str, int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Observation:
    """What the served model said about one item, kept until its feedback may arrive: per
    task a label, or for a multi-label task the tuple of labels it answered."""

    id: str
    text: str | None
    labels: dict[str, Gold]
    embedding: npt.NDArray[np.float32] | None
    model_version: str
    seen_at: float


@dataclass(frozen=True)
class Joined:
    """A feedback label with the prediction it belongs to."""

    feedback: Feedback
    observation: Observation


def _known_tasks(info: ValidationInfo) -> Mapping[str, TaskHead]:
    tasks: Mapping[str, TaskHead] = (info.context or {}).get("tasks", {})
    return tasks


def _problem(template: str, **values: str) -> PydanticCustomError:
    return PydanticCustomError("feedback", template, values)


class _FeedbackRecord(BaseModel):
    """A feedback record as it arrives; the task and label checks need the served tasks
    (name to head) as validation context."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)] | int
    task: str
    # One of the two, as the task's kind says (checked once the task is known).
    label: str | None = None
    labels: list[str] | None = None
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
        tasks = _known_tasks(info)
        if value not in tasks:
            raise _problem(
                "'task' must be one of {tasks}, got {got}",
                tasks=str(sorted(tasks)),
                got=repr(value[:100]),
            )
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("feedback", "'text' must not be blank")
        return value

    @model_validator(mode="after")
    def _answer_fits_the_task(self, info: ValidationInfo) -> _FeedbackRecord:
        head = _known_tasks(info)[self.task]
        if head.multilabel:
            _check_label_set(head, self.label, self.labels)
        else:
            _check_label(head, self.label, self.labels)
        return self


def _check_label(head: TaskHead, label: str | None, labels: list[str] | None) -> None:
    """A multi-class task's answer: one known `label`, no `labels`."""
    if labels is not None:
        raise _problem(
            "'labels' is for multi-label tasks: {task} is multi-class, give one 'label'",
            task=head.name,
        )
    if label is None:
        raise _problem("'label' is missing: " + _RULES["label"])
    if label not in head.labels:
        raise _problem(
            "'label' must be one of {labels} for {task}, got {got}",
            labels=str(list(head.labels)),
            task=head.name,
            got=repr(label[:100]),
        )


def _check_label_set(head: TaskHead, label: str | None, labels: list[str] | None) -> None:
    """A multi-label task's answer: `labels`, known and distinct (possibly none), no `label`."""
    if label is not None:
        raise _problem(
            "'label' is for multi-class tasks: {task} is multi-label, give 'labels' (a list)",
            task=head.name,
        )
    if labels is None:
        raise _problem("'labels' is missing: " + _RULES["labels"])
    unknown = [lab for lab in labels if lab not in head.labels]
    if unknown:
        raise _problem(
            "'labels' must be among {labels} for {task}, got {got}",
            labels=str(list(head.labels)),
            task=head.name,
            got=repr(unknown[0][:100]),
        )
    if len(set(labels)) != len(labels):
        twice = next(lab for i, lab in enumerate(labels) if lab in labels[:i])
        raise _problem("'labels' names {got} more than once", got=repr(twice))


# What each field must be, for errors pydantic raises before our validators run.
_RULES = {
    "id": f"'id' must be a non-empty string (at most {MAX_ID_CHARS} characters) or an integer",
    "task": "'task' must be one of {tasks}",
    "label": "'label' must be a label (a string) of a multi-class task",
    "labels": "'labels' must be a list of distinct labels (strings) of a multi-label task, "
    "empty when none applies",
    "text": f"'text' must be a non-empty string of at most {MAX_TEXT_CHARS} characters "
    "when present",
}


def _reason(exc: ValidationError, tasks: Sequence[str]) -> str:
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
        why = _RULES.get(str(loc[0]), f"{loc[0]!r} is invalid").format(tasks=sorted(tasks))
        if first["type"] == "missing":
            why = f"'{loc[0]}' is missing: {why}"
    return why[:MAX_REASON_CHARS]


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse_feedback(
    value: bytes | None,
    tasks: Sequence[TaskHead],
    origin: tuple[str, int, int] | None = None,
) -> Feedback | str:
    """A feedback record for one of `tasks` (the served model's), or why it is unusable
    (never raises). A multi-label answer comes back as a tuple in the task's label order."""
    if not value:
        return "record has no value"
    if len(value) > MAX_FEEDBACK_BYTES:
        return f"{len(value)} bytes exceeds the {MAX_FEEDBACK_BYTES}-byte feedback limit"
    heads = {t.name: t for t in tasks}
    try:
        rec = _FeedbackRecord.model_validate_json(value, context={"tasks": heads})
    except ValidationError as exc:
        return _reason(exc, list(heads))
    head = heads[rec.task]
    gold: Gold
    if head.multilabel:
        carried = set(rec.labels or ())
        gold = tuple(lab for lab in head.labels if lab in carried)
    else:
        gold = str(rec.label)
    return Feedback(str(rec.id), rec.task, gold, rec.text, origin)


def gold_chars(gold: Gold) -> int:
    """Characters of a label or of a label set (for byte estimates)."""
    return len(gold) if isinstance(gold, str) else sum(len(lab) for lab in gold)


def gold_document(gold: Gold) -> dict[str, Any]:
    """A true answer as a feedback record says it: `label`, or `labels` (a list)."""
    return {"label": gold} if isinstance(gold, str) else {"labels": list(gold)}


# Per kept record, besides its text and embedding: the objects, dict slots and fields.
RECORD_OVERHEAD_BYTES = 200


def observation_bytes(obs: Observation) -> int:
    """What keeping a prediction costs, roughly: its text, embedding, labels and overhead."""
    text = len(obs.text.encode("utf-8", "replace")) if obs.text else 0
    embedding = obs.embedding.nbytes if obs.embedding is not None else 0
    labels = sum(len(k) + gold_chars(v) for k, v in obs.labels.items())
    return RECORD_OVERHEAD_BYTES + len(obs.id) + text + embedding + labels


def feedback_bytes(fb: Feedback) -> int:
    """What keeping a waiting feedback record costs, roughly."""
    text = len(fb.text.encode("utf-8", "replace")) if fb.text else 0
    return RECORD_OVERHEAD_BYTES + len(fb.id) + len(fb.task) + gold_chars(fb.label) + text
