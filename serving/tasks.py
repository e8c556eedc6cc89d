"""The task heads a model carries: each a name, a kind and its labels, and the default pair.

A `multiclass` head answers one label per text (softmax). A `multilabel` head answers any
number (a sigmoid per label, each with its own decision threshold chosen on validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

TaskKind = Literal["multiclass", "multilabel"]
TASK_KINDS: tuple[TaskKind, ...] = ("multiclass", "multilabel")
DEFAULT_THRESHOLD = 0.5

# What one row says for one task: a label (multi-class) or a set of labels (multi-label).
Gold = str | tuple[str, ...]


@dataclass(frozen=True)
class TaskHead:
    """One classification head on the shared encoder."""

    name: str
    labels: tuple[str, ...]
    kind: TaskKind = "multiclass"
    # Multi-label only: one decision threshold per label, in `labels` order (empty: 0.5).
    thresholds: tuple[float, ...] = ()

    @property
    def multilabel(self) -> bool:
        """Whether a text may carry any number of this task's labels."""
        return self.kind == "multilabel"

    def threshold(self, index: int) -> float:
        """The decision threshold of label `index` (multi-label heads)."""
        return self.thresholds[index] if self.thresholds else DEFAULT_THRESHOLD

    def to_manifest(self) -> dict[str, Any]:
        """The head as a version's manifest records it."""
        entry: dict[str, Any] = {"name": self.name, "labels": list(self.labels)}
        if self.multilabel:
            entry["kind"] = self.kind
            entry["thresholds"] = [round(t, 6) for t in self.thresholds]
        return entry

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> TaskHead:
        """The inverse of `to_manifest` (versions exported before kinds existed are
        multi-class)."""
        kind = entry.get("kind", "multiclass")
        if kind not in TASK_KINDS:
            raise ValueError(f"task {entry.get('name')!r}: unknown kind {kind!r}")
        labels = tuple(str(label) for label in entry["labels"])
        thresholds = tuple(float(t) for t in entry.get("thresholds", ()))
        if thresholds and (
            len(thresholds) != len(labels) or not all(0.0 <= t <= 1.0 for t in thresholds)
        ):
            raise ValueError(
                f"task {entry.get('name')!r}: needs one threshold in [0, 1] per label, "
                f"got {list(thresholds)} for {len(labels)} labels"
            )
        return cls(str(entry["name"]), labels, kind, thresholds)


def gold_indices(task: TaskHead, gold: Gold) -> list[int]:
    """The label indices a row's gold answer names (one for multi-class)."""
    names = (gold,) if isinstance(gold, str) else gold
    return [task.labels.index(name) for name in names]


def same_task(a: TaskHead, b: TaskHead) -> bool:
    """Whether two heads answer the same question: same kind, same labels in any order."""
    return a.kind == b.kind and sorted(a.labels) == sorted(b.labels)


def find_task(tasks: Sequence[TaskHead], name: str) -> TaskHead | None:
    """The head called `name`, if any."""
    return next((t for t in tasks if t.name == name), None)


DEFAULT_TASKS: tuple[TaskHead, ...] = (
    TaskHead("sentiment", ("negative", "neutral", "positive")),
    TaskHead("topic", ("World", "Sports", "Business", "Sci/Tech")),
)
