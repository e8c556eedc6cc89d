"""Late true labels joined to the predictions that were made, by id, within a window."""

from __future__ import annotations

from collections import OrderedDict
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

# Why a feedback record is dead-lettered; stable strings (metric labels, headers).
INVALID_FEEDBACK = "invalid_feedback"
UNMATCHED_FEEDBACK = "feedback_unmatched"
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
    # Where the record came from (topic, partition, offset): the caller commits past it
    # only once it is joined or dead-lettered.
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


@dataclass
class _Waiting:
    feedback: list[Feedback]
    since: float
    nbytes: int


@dataclass
class FeedbackJoin:
    """Predictions kept `window_s` seconds (at most `max_items` and `max_bytes`), feedback
    waiting as long (at most `max_items` ids, `waiting_max_bytes`, `max_waiting_per_id`
    records for one id).

    Feedback that finds no prediction within the window comes back from `expire()`, so the
    caller keeps it (it carries its text) or dead-letters it; nothing is dropped silently.
    Feedback that cannot wait (over a cap) comes back from `add()` at once.
    """

    window_s: float = 3600.0
    max_items: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    waiting_max_bytes: int = 64 * 1024 * 1024
    max_waiting_per_id: int = 16
    # Each prediction with its byte estimate, oldest first.
    _predictions: OrderedDict[str, tuple[Observation, int]] = field(default_factory=OrderedDict)
    # Waiting feedback by item id, oldest first, with when the first of it arrived.
    _waiting: OrderedDict[str, _Waiting] = field(default_factory=OrderedDict)
    _predictions_bytes: int = 0
    _waiting_bytes: int = 0

    def observe(self, obs: Observation) -> list[Joined]:
        """Keep a prediction; returns feedback that was waiting for it."""
        old = self._predictions.pop(obs.id, None)
        if old is not None:
            self._predictions_bytes -= old[1]
        size = observation_bytes(obs)
        self._predictions[obs.id] = (obs, size)
        self._predictions_bytes += size
        # Oldest first, down to the newest itself if that alone is over the byte budget.
        while self._predictions and (
            len(self._predictions) > self.max_items or self._predictions_bytes > self.max_bytes
        ):
            self._forget_oldest_prediction()
        waiting = self._waiting.pop(obs.id, None)
        if waiting is None:
            return []
        self._waiting_bytes -= waiting.nbytes
        return [Joined(fb, obs) for fb in waiting.feedback]

    def _forget_oldest_prediction(self) -> None:
        _, (_, size) = self._predictions.popitem(last=False)
        self._predictions_bytes -= size

    def add(self, fb: Feedback, now: float) -> tuple[Joined | None, Feedback | None]:
        """Join a feedback record: (joined, None), or (None, None) while it waits, or
        (None, feedback) when it cannot wait (a cap on waiting feedback is reached)."""
        kept = self._predictions.get(fb.id)
        if kept is not None:
            return Joined(fb, kept[0]), None
        size = feedback_bytes(fb)
        if self._waiting_bytes + size > self.waiting_max_bytes:
            return None, fb
        waiting = self._waiting.get(fb.id)
        if waiting is None:
            if len(self._waiting) >= self.max_items:
                return None, fb
            waiting = self._waiting[fb.id] = _Waiting([], now, 0)
        elif len(waiting.feedback) >= self.max_waiting_per_id:
            return None, fb
        waiting.feedback.append(fb)
        waiting.nbytes += size
        self._waiting_bytes += size
        return None, None

    def expire(self, now: float) -> list[Feedback]:
        """Forget predictions older than the window; return feedback that waited it out."""
        cutoff = now - self.window_s
        while self._predictions:
            oldest, _ = next(iter(self._predictions.values()))
            if oldest.seen_at >= cutoff:
                break
            self._forget_oldest_prediction()
        expired: list[Feedback] = []
        while self._waiting:
            item_id, waiting = next(iter(self._waiting.items()))
            if waiting.since >= cutoff:
                break
            del self._waiting[item_id]
            self._waiting_bytes -= waiting.nbytes
            expired.extend(waiting.feedback)
        return expired

    def waiting_origins(self) -> list[tuple[str, int, int]]:
        """Where the feedback still waiting came from."""
        return [fb.origin for w in self._waiting.values() for fb in w.feedback if fb.origin]

    @property
    def sizes(self) -> tuple[int, int]:
        """(predictions kept, ids with feedback waiting)."""
        return len(self._predictions), len(self._waiting)

    @property
    def bytes(self) -> tuple[int, int]:
        """Estimated bytes of (predictions kept, feedback waiting)."""
        return self._predictions_bytes, self._waiting_bytes
