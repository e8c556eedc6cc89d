"""Late true labels joined to the predictions that were made, by id, within a window."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online.feedback_records import (
    Feedback,
    Joined,
    Observation,
    feedback_bytes,
    observation_bytes,
)
from online.watch_state import Deferred, SnapshotError, TextColumn
from serving.tasks import Gold

# Why feedback that found no prediction is dead-lettered (a stable string: metric labels,
# headers).
UNMATCHED_FEEDBACK = "feedback_unmatched"


@dataclass(frozen=True)
class _Waiting:
    # Immutable (replaced on each arrival), so a snapshot copies only the dict's values.
    id: str
    feedback: tuple[Feedback, ...]
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
        self._keep_prediction(obs)
        self._trim_predictions()
        waiting = self._waiting.pop(obs.id, None)
        if waiting is None:
            return []
        self._waiting_bytes -= waiting.nbytes
        return [Joined(fb, obs) for fb in waiting.feedback]

    def _keep_prediction(self, obs: Observation) -> None:
        size = observation_bytes(obs)
        self._predictions[obs.id] = (obs, size)
        self._predictions_bytes += size

    def _trim_predictions(self) -> None:
        """Oldest first, down to the newest itself if that alone is over the byte budget."""
        while self._predictions and (
            len(self._predictions) > self.max_items or self._predictions_bytes > self.max_bytes
        ):
            self._forget_oldest_prediction()

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
            waiting = _Waiting(fb.id, (), now, 0)
        elif len(waiting.feedback) >= self.max_waiting_per_id:
            return None, fb
        # Assigning an existing key keeps its place in the order (oldest first).
        self._waiting[fb.id] = _Waiting(
            fb.id, (*waiting.feedback, fb), waiting.since, waiting.nbytes + size
        )
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

    def snapshot(self) -> Deferred:
        """A copy for a snapshot, cheap enough for the event loop: records are immutable,
        only the containers are copied; `to_state()` lays them out later, off the loop."""
        # Two list copies and nothing else: 100,000 new objects here would cost the loop a
        # full garbage collection of the whole state.
        return _JoinCopy(list(self._predictions.values()), list(self._waiting.values()))

    def load_state(
        self, state: dict[str, Any], tasks: Collection[str] | None = None
    ) -> list[Feedback]:
        """Replace the contents with a snapshot's `to_state()`, under this join's caps.

        Predictions over the caps are forgotten (oldest first). Waiting feedback of a task
        not in `tasks`, or over a cap, is returned (the caller keeps or dead-letters it).
        """
        self._predictions.clear()
        self._waiting.clear()
        self._predictions_bytes = self._waiting_bytes = 0
        for obs in _observations(state["predictions"]):
            self._keep_prediction(obs)
        self._trim_predictions()
        left_out: list[Feedback] = []
        for fb, since in _waiting_feedback(state["waiting"]):
            if tasks is not None and fb.task not in tasks:
                left_out.append(fb)
                continue
            joined, overflow = self.add(fb, since)
            if joined is not None or overflow is not None:
                left_out.append(fb)
        return left_out

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


@dataclass(frozen=True)
class _JoinCopy(Deferred):
    predictions: list[tuple[Observation, int]]
    waiting: list[_Waiting]

    def to_state(self) -> dict[str, Any]:
        """Predictions and waiting feedback as columns: texts and embeddings in blobs."""
        preds = [obs for obs, _ in self.predictions]
        widths = np.array(
            [o.embedding.size if o.embedding is not None else -1 for o in preds], dtype=np.int32
        )
        embeddings = [o.embedding.reshape(-1) for o in preds if o.embedding is not None]
        flat = (
            np.concatenate(embeddings).astype(np.float32, copy=False)
            if embeddings
            else np.zeros(0, dtype=np.float32)
        )
        tasks = sorted({task for o in preds for task in o.labels})
        sets = sorted({t for o in preds for t, g in o.labels.items() if not isinstance(g, str)})
        records = [(w, fb) for w in self.waiting for fb in w.feedback]
        return {
            "predictions": {
                "id": TextColumn([o.id for o in preds]),
                "text": TextColumn([o.text for o in preds]),
                "labels": {t: label_column([o.labels.get(t) for o in preds]) for t in tasks},
                # Multi-label answers (absent from snapshots taken before they existed).
                "label_sets": {t: label_set_column([o.labels.get(t) for o in preds]) for t in sets},
                "version": TextColumn([o.model_version for o in preds]),
                "seen_at": np.array([o.seen_at for o in preds], dtype=np.float64),
                "width": widths,
                "embedding": flat,
            },
            # One row per record; an id's records are consecutive and share `since`.
            "waiting": {
                "id": TextColumn([fb.id for _, fb in records]),
                "since": np.array([w.since for w, _ in records], dtype=np.float64),
                "task": TextColumn([fb.task for _, fb in records]),
                "label": label_column([fb.label for _, fb in records]),
                "labels": label_set_column([fb.label for _, fb in records]),
                "text": TextColumn([fb.text for _, fb in records]),
                "origin_topic": TextColumn(
                    [fb.origin[0] if fb.origin else None for _, fb in records]
                ),
                "origin_partition": np.array(
                    [fb.origin[1] if fb.origin else -1 for _, fb in records], dtype=np.int64
                ),
                "origin_offset": np.array(
                    [fb.origin[2] if fb.origin else -1 for _, fb in records], dtype=np.int64
                ),
            },
        }


def label_column(golds: Sequence[Gold | None]) -> TextColumn:
    """A snapshot column of single labels; None where there is none or it is a label set."""
    return TextColumn([g if isinstance(g, str) else None for g in golds])


def label_set_column(golds: Sequence[Gold | None]) -> TextColumn:
    """A snapshot column of label sets as JSON arrays; None where there is none or it is a
    single label."""
    return TextColumn([json.dumps(list(g)) if isinstance(g, tuple) else None for g in golds])


def labels_of_columns(
    labels: Sequence[str | None], sets: Sequence[str | None] | None
) -> list[Gold | None]:
    """The answers `label_column` and `label_set_column` laid out (no sets: an old snapshot)."""
    if sets is None:
        return list(labels)
    if len(sets) != len(labels):
        raise SnapshotError("label and label-set columns of different lengths")
    return [
        label if label is not None else _label_set(s) for label, s in zip(labels, sets, strict=True)
    ]


def _label_set(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    try:
        labels = json.loads(value)
    except ValueError as exc:
        raise SnapshotError(f"a label set is not JSON: {exc}") from exc
    if not isinstance(labels, list) or not all(isinstance(lab, str) for lab in labels):
        raise SnapshotError("a label set is not a list of strings")
    return tuple(labels)


def _columns(columns: dict[str, Any], names: Sequence[str]) -> list[Any]:
    """The named columns, checked to be of one length."""
    out = [columns[n] for n in names]
    if len({len(c) for c in out}) > 1:
        raise SnapshotError(f"columns {list(names)} of different lengths")
    return out


def _observations(columns: dict[str, Any]) -> list[Observation]:
    """The predictions of `_JoinCopy.to_state()`, oldest first, each with its own array."""
    ids, texts, versions, seen_at, widths = _columns(
        columns, ["id", "text", "version", "seen_at", "width"]
    )
    sets = columns.get("label_sets", {})
    labels = {
        task: labels_of_columns(columns["labels"].get(task, [None] * len(ids)), sets.get(task))
        for task in sorted({*columns["labels"], *sets})
    }
    if any(len(col) != len(ids) for col in labels.values()):
        raise SnapshotError("label columns of another length")
    flat = columns["embedding"]
    if int(widths[widths >= 0].sum()) != len(flat):
        raise SnapshotError("embedding widths do not add up to the embeddings")
    out: list[Observation] = []
    at = 0
    for i, item_id in enumerate(ids):
        width = int(widths[i])
        embedding = None
        if width >= 0:
            # A copy: a view would keep the whole snapshot array alive.
            embedding = np.array(flat[at : at + width], dtype=np.float32)
            at += width
        out.append(
            Observation(
                item_id,
                texts[i],
                {t: g for t, col in labels.items() if (g := col[i]) is not None},
                embedding,
                versions[i],
                float(seen_at[i]),
            )
        )
    return out


def _waiting_feedback(columns: dict[str, Any]) -> list[tuple[Feedback, float]]:
    """The waiting feedback of `_JoinCopy.to_state()`, oldest first, with `since`."""
    names = ["id", "since", "task", "label", "text"]
    names += ["origin_topic", "origin_partition", "origin_offset"]
    ids, since, tasks, labels, texts, topics, partitions, offsets = _columns(columns, names)
    golds = labels_of_columns(labels, columns.get("labels"))
    out = []
    for i, item_id in enumerate(ids):
        topic = topics[i]
        origin = (topic, int(partitions[i]), int(offsets[i])) if topic is not None else None
        gold = golds[i]
        if gold is None:
            raise SnapshotError(f"waiting feedback for {item_id!r} without a label")
        out.append((Feedback(item_id, tasks[i], gold, texts[i], origin), float(since[i])))
    return out
