"""Labeled text for training and evaluation: readers, splits and per-task data sets."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from serving.tasks import Gold, TaskHead


@dataclass(frozen=True)
class LabeledText:
    """A text and its gold answer per task (a task may be absent): a label for a
    multi-class task, a tuple of labels for a multi-label one."""

    text: str
    labels: dict[str, Gold]


@dataclass(frozen=True)
class TaskData:
    """One task's rows: train, validation (early stopping) and test (the report)."""

    task: TaskHead
    train: list[LabeledText]
    val: list[LabeledText]
    test: list[LabeledText] = field(default_factory=list)
    source: str = ""


def data_name(data: TaskData) -> str:
    """A data set's short name: its directory's name, else the task's."""
    return Path(data.source).name if data.source else data.task.name


def seed_data_path() -> Path:
    """The labeled headlines and posts the project wrote and ships for the default heads."""
    return Path(str(resources.files("serving") / "seed_data" / "headlines.jsonl"))


def _json_lines(path: Path) -> list[tuple[int, dict[str, object]]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{lineno}: missing or empty 'text'")
            rows.append((lineno, obj))
    if not rows:
        raise ValueError(f"{path} holds no labeled rows")
    return rows


def read_labeled(path: Path, tasks: Sequence[TaskHead]) -> list[LabeledText]:
    """Read multi-task rows `{"text": ..., "<task>": "<label>", ...}`, checking every label."""
    known = {t.name: set(t.labels) for t in tasks}
    rows: list[LabeledText] = []
    for lineno, obj in _json_lines(path):
        labels = {name: str(obj[name]) for name in known if name in obj}
        for name, label in labels.items():
            if label not in known[name]:
                raise ValueError(f"{path}:{lineno}: unknown {name} label {label!r}")
        rows.append(LabeledText(str(obj["text"]), labels))
    return rows


def read_task_rows(path: Path, task: TaskHead) -> list[LabeledText]:
    """Read single-task rows `{"text": ..., "label": ...}` as rows of `task`."""
    rows: list[LabeledText] = []
    for lineno, obj in _json_lines(path):
        label = obj.get("label")
        if label not in task.labels:
            raise ValueError(
                f"{path}:{lineno}: label {label!r} is not one of {task.name}'s {list(task.labels)}"
            )
        rows.append(LabeledText(str(obj["text"]), {task.name: str(label)}))
    return rows


def split_holdout(
    rows: Sequence[LabeledText], fraction: float = 0.2
) -> tuple[list[LabeledText], list[LabeledText]]:
    """Deterministic train/held-out split by a hash of the text (stable across runs)."""
    train: list[LabeledText] = []
    held: list[LabeledText] = []
    for row in rows:
        digest = hashlib.blake2b(row.text.encode(), digest_size=8).digest()
        (held if int.from_bytes(digest) / 2**64 < fraction else train).append(row)
    return train, held


def sample(rows: Sequence[LabeledText], n: int | None, seed: int) -> list[LabeledText]:
    """A seeded random sample of `n` rows (all rows, in order, when `n` is None or too big)."""
    if n is None or n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(list(rows), n)


def load_task_dir(
    directory: Path,
    task: TaskHead,
    *,
    val_fraction: float = 0.05,
    limit: int | None = None,
    seed: int = 0,
) -> TaskData:
    """A task's data from `directory/{train,val,test}.jsonl` of `{"text", "label"}` rows.

    `train.jsonl` is required. Without `val.jsonl` a hash-chosen `val_fraction` of the
    training rows is held out for early stopping. `limit` caps each split (seeded sample),
    for quick runs.
    """
    train_path = directory / "train.jsonl"
    if not train_path.is_file():
        raise FileNotFoundError(f"{train_path} is missing: a task directory needs train.jsonl")
    train = read_task_rows(train_path, task)
    val_path = directory / "val.jsonl"
    if val_path.is_file():
        val = read_task_rows(val_path, task)
    else:
        train, val = split_holdout(train, val_fraction)
    test_path = directory / "test.jsonl"
    test = read_task_rows(test_path, task) if test_path.is_file() else []
    return TaskData(
        task=task,
        train=sample(train, limit, seed),
        val=sample(val, limit, seed + 1),
        test=sample(test, limit, seed + 2),
        source=str(directory),
    )
