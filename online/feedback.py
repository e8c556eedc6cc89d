"""Late true labels joined to the predictions that were made, by id, within a window."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# Why a feedback record is dead-lettered; stable strings (metric labels, headers).
INVALID_FEEDBACK = "invalid_feedback"
UNMATCHED_FEEDBACK = "feedback_unmatched"
MAX_FEEDBACK_BYTES = 64 * 1024


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


def parse_feedback(
    value: bytes | None,
    labels: Mapping[str, Sequence[str]],
    origin: tuple[str, int, int] | None = None,
) -> Feedback | str:
    """A feedback record `{id, task, label[, text]}`, or why it is unusable."""
    if not value:
        return "record has no value"
    if len(value) > MAX_FEEDBACK_BYTES:
        return f"{len(value)} bytes exceeds the {MAX_FEEDBACK_BYTES}-byte feedback limit"
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError) as exc:
        return f"invalid JSON: {str(exc)[:200]}"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    raw_id = obj.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if not isinstance(raw_id, str) or not raw_id:
        return "'id' must be a non-empty string or an integer"
    task, label, text = obj.get("task"), obj.get("label"), obj.get("text")
    if not isinstance(task, str) or task not in labels:
        return f"'task' must be one of {sorted(labels)}, got {str(task)[:100]!r}"
    if label not in labels[task]:
        return f"'label' must be one of {list(labels[task])} for {task}, got {str(label)[:100]!r}"
    if text is not None and (not isinstance(text, str) or not text.strip()):
        return "'text' must be a non-empty string when present"
    return Feedback(raw_id, task, str(label), text, origin)


@dataclass
class FeedbackJoin:
    """Predictions kept `window_s` seconds (at most `max_items`), feedback waiting as long.

    Feedback that finds no prediction within the window comes back from `expire()`, so the
    caller keeps it (it carries its text) or dead-letters it; nothing is dropped silently.
    """

    window_s: float = 3600.0
    max_items: int = 100_000
    _predictions: OrderedDict[str, Observation] = field(default_factory=OrderedDict)
    # Waiting feedback by item id, oldest first, with when the first of it arrived.
    _waiting: OrderedDict[str, tuple[list[Feedback], float]] = field(default_factory=OrderedDict)

    def observe(self, obs: Observation) -> list[Joined]:
        """Keep a prediction; returns feedback that was waiting for it."""
        self._predictions[obs.id] = obs
        self._predictions.move_to_end(obs.id)
        while len(self._predictions) > self.max_items:
            self._predictions.popitem(last=False)
        waiting, _ = self._waiting.pop(obs.id, ([], 0.0))
        return [Joined(fb, obs) for fb in waiting]

    def add(self, fb: Feedback, now: float) -> tuple[Joined | None, Feedback | None]:
        """Join a feedback record: (joined, None), or (None, None) while it waits, or
        (None, feedback) when the waiting room is full and it cannot wait."""
        obs = self._predictions.get(fb.id)
        if obs is not None:
            return Joined(fb, obs), None
        if fb.id in self._waiting:
            self._waiting[fb.id][0].append(fb)
        elif len(self._waiting) >= self.max_items:
            return None, fb
        else:
            self._waiting[fb.id] = ([fb], now)
        return None, None

    def expire(self, now: float) -> list[Feedback]:
        """Forget predictions older than the window; return feedback that waited it out."""
        cutoff = now - self.window_s
        while self._predictions:
            oldest = next(iter(self._predictions.values()))
            if oldest.seen_at >= cutoff:
                break
            self._predictions.popitem(last=False)
        expired: list[Feedback] = []
        while self._waiting:
            item_id, (waiting, since) = next(iter(self._waiting.items()))
            if since >= cutoff:
                break
            del self._waiting[item_id]
            expired.extend(waiting)
        return expired

    def waiting_origins(self) -> list[tuple[str, int, int]]:
        """Where the feedback still waiting came from."""
        return [fb.origin for fbs, _ in self._waiting.values() for fb in fbs if fb.origin]

    @property
    def sizes(self) -> tuple[int, int]:
        """(predictions kept, feedback waiting)."""
        return len(self._predictions), len(self._waiting)
