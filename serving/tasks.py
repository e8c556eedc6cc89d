"""The task heads a model carries: each a name and its labels, and the default pair."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskHead:
    """One classification head on the shared encoder (multi-class softmax)."""

    name: str
    labels: tuple[str, ...]


DEFAULT_TASKS: tuple[TaskHead, ...] = (
    TaskHead("sentiment", ("negative", "neutral", "positive")),
    TaskHead("topic", ("World", "Sports", "Business", "Sci/Tech")),
)
