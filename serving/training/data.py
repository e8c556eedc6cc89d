"""Labeled text for training and evaluation: readers, splits and per-task data sets."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from serving.tasks import Gold, TaskHead
from serving.training.sources import (
    HUB_PREFIX,
    SPLIT_NAMES,
    Columns,
    RawRow,
    SourceError,
    file_records,
    hub_records,
    raw_rows,
    split_file,
)


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


def read_labeled(path: Path, tasks: Sequence[TaskHead]) -> list[LabeledText]:
    """Read multi-task rows `{"text": ..., "<task>": "<label>", ...}`, checking every label."""
    known = {t.name: set(t.labels) for t in tasks}
    rows: list[LabeledText] = []
    for lineno, obj in file_records(path):
        where = f"{path}:{lineno}"
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"{where}: missing or empty 'text'")
        labels: dict[str, Gold] = {name: str(obj[name]) for name in known if name in obj}
        for name, label in labels.items():
            if label not in known[name]:
                raise SourceError(f"{where}: unknown {name} label {label!r}")
        rows.append(LabeledText(text, labels))
    if not rows:
        raise SourceError(f"{path} holds no labeled rows")
    return rows


def task_rows(raw: Sequence[RawRow], task: TaskHead) -> list[LabeledText]:
    """Rows of `task` from raw rows, every answer checked against its kind and labels."""
    known = set(task.labels)
    rows: list[LabeledText] = []
    for row in raw:
        gold = row.gold
        if task.multilabel:
            names = (gold,) if isinstance(gold, str) else tuple(dict.fromkeys(gold))
        elif isinstance(gold, list):
            raise SourceError(
                f"{row.where}: {task.name} is multi-class but the row carries a list of labels"
            )
        else:
            names = (gold,)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SourceError(
                f"{row.where}: label {unknown[0]!r} is not one of {task.name}'s {list(task.labels)}"
            )
        rows.append(LabeledText(row.text, {task.name: names if task.multilabel else names[0]}))
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
    columns: Columns | None = None,
) -> TaskData:
    """A task's data from `directory/{train,val,test}.{jsonl,csv,parquet}`.

    A train file is required. Without a val file a hash-chosen `val_fraction` of the
    training rows is held out for early stopping (and multi-label thresholds). `limit` caps
    each split (seeded sample), for quick runs.
    """
    raw = read_splits(directory, columns or Columns())
    return task_data(task, raw, str(directory), val_fraction=val_fraction, limit=limit, seed=seed)


def read_splits(source: Path | str, columns: Columns) -> dict[str, list[RawRow]]:
    """The raw rows of each split a source has: a directory of split files, or a Hugging
    Face dataset (`hf:NAME`). A train split is required."""
    out: dict[str, list[RawRow]] = {}
    text = str(source)
    for split in SPLIT_NAMES:
        if text.startswith(HUB_PREFIX):
            found = hub_records(text[len(HUB_PREFIX) :], split)
            if found is not None:
                out[split] = raw_rows(found[0], found[1], columns)
            continue
        directory = Path(source)
        if not directory.is_dir():
            raise SourceError(f"{directory} is not a directory of labeled data")
        path = split_file(directory, split)
        if path is not None:
            out[split] = raw_rows(file_records(path), str(path), columns)
    if "train" not in out:
        raise SourceError(f"{source} has no train split (train.jsonl, train.csv or train.parquet)")
    return out


def task_data(
    task: TaskHead,
    raw: dict[str, list[RawRow]],
    source: str,
    *,
    val_fraction: float = 0.05,
    limit: int | None = None,
    seed: int = 0,
) -> TaskData:
    """`task`'s TaskData from raw split rows, checked against its labels."""
    train = task_rows(raw["train"], task)
    if "val" in raw:
        val = task_rows(raw["val"], task)
    else:
        train, val = split_holdout(train, val_fraction)
    test = task_rows(raw["test"], task) if "test" in raw else []
    return TaskData(
        task=task,
        train=sample(train, limit, seed),
        val=sample(val, limit, seed + 1),
        test=sample(test, limit, seed + 2),
        source=source,
    )
