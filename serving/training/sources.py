"""Where labeled rows come from: JSON Lines, CSV and Parquet files, or a Hugging Face
dataset (hub name or local directory) through the `datasets` library.

Every reader yields `RawRow`s - where the row came from, its text and its gold answer as
found (a string, or a list for multi-label) - with the columns named by a `Columns` map.
Checking the answers against a task's labels is the caller's job (serving.training.data).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
# Split names as files (or hub splits) may spell them; the first found wins.
SPLIT_NAMES = {"train": ("train",), "val": ("val", "validation", "dev"), "test": ("test",)}
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text and the gold answer (`label`: one, `labels`: a list)."""

    text: str = "text"
    label: str = "label"
    labels: str = "labels"


@dataclass(frozen=True)
class RawRow:
    """One row as read: where it is (for errors), its text and its answer as found."""

    where: str
    text: str
    gold: str | list[str]


class SourceError(ValueError):
    """A data source that cannot be read as asked: missing file, column or value."""


def split_file(directory: Path, split: str) -> Path | None:
    """`directory`'s file for `split` in any supported format, if there is one."""
    for name in SPLIT_NAMES[split]:
        for suffix in FILE_FORMATS:
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{lineno}: not JSON ({exc.msg})") from None


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        # Line 1 is the header; a record's number is its line in a file without
        # multi-line fields, which is what users look for.
        yield from enumerate(csv.DictReader(fh), 2)


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    yield from enumerate(pq.read_table(path).to_pylist(), 1)


def file_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, record) of a JSON Lines, CSV or Parquet file."""
    if not path.is_file():
        raise SourceError(f"{path} is missing")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _json_records(path)
    if suffix == ".csv":
        return _csv_records(path)
    if suffix == ".parquet":
        return _parquet_records(path)
    raise SourceError(f"{path}: unsupported format (use one of {', '.join(FILE_FORMATS)})")


def _gold(value: Any, where: str, columns: Columns, column: str) -> str | list[str]:
    """A label as a string, or a list of them. A text cell (CSV) of a labels column may hold
    a JSON list, or labels separated by ';' when the column is only for lists."""
    if isinstance(value, str) and column == columns.labels:
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise SourceError(f"{where}: '{column}' is not a JSON list") from None
        elif columns.labels != columns.label:
            value = [part.strip() for part in text.split(";") if part.strip()]
    if isinstance(value, list):
        if not all(isinstance(v, str) and v for v in value):
            raise SourceError(f"{where}: '{column}' must be a list of label strings")
        return list(value)
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value):
        raise SourceError(f"{where}: '{column}' is empty or not a label")
    if isinstance(value, (str, int)):
        return str(value)
    raise SourceError(f"{where}: '{column}' must be a label string, got {type(value).__name__}")


def raw_rows(records: Iterable[tuple[int, Any]], origin: str, columns: Columns) -> list[RawRow]:
    """Rows from records, checking that each has a text and an answer column."""
    rows: list[RawRow] = []
    for number, record in records:
        where = f"{origin}:{number}"
        if not isinstance(record, dict):
            raise SourceError(f"{where}: expected an object with a '{columns.text}' column")
        text = record.get(columns.text)
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"{where}: missing or empty '{columns.text}' column")
        column = columns.labels if columns.labels in record else columns.label
        if column not in record:
            raise SourceError(
                f"{where}: neither '{columns.label}' nor '{columns.labels}' column is there "
                f"(columns: {sorted(map(str, record))[:10]})"
            )
        rows.append(RawRow(where, text, _gold(record[column], where, columns, column)))
    if not rows:
        raise SourceError(f"{origin} holds no labeled rows")
    return rows


def hub_records(name: str, split: str) -> tuple[list[tuple[int, Any]], str] | None:
    """A Hugging Face dataset's split as (number, record) pairs with class ids turned into
    label names, and its origin; None when the dataset has no such split.

    `name` is a hub id or a local directory: `datasets` resolves both the same way.
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        splits = datasets.get_dataset_split_names(name)
    except Exception as exc:
        raise SourceError(f"Hugging Face dataset {name!r} cannot be opened: {exc}") from exc
    found = next((s for s in SPLIT_NAMES[split] if s in splits), None)
    if found is None:
        return None
    origin = f"{HUB_PREFIX}{name}[{found}]"
    try:
        data = datasets.load_dataset(name, split=found)
    except Exception as exc:
        raise SourceError(f"{origin} cannot be loaded: {exc}") from exc
    names = {col: _class_names(feature) for col, feature in data.features.items()}
    records = []
    for number, record in enumerate(data, 1):
        for col, labels in names.items():
            if labels is not None and record.get(col) is not None:
                record[col] = _named(record[col], labels, f"{origin}:{number}", col)
        records.append((number, record))
    return records, origin


def _named(value: Any, names: list[str], where: str, column: str) -> Any:
    """Class ids as label names; an id out of range (the hub's -1: no label) is an error."""
    ids = value if isinstance(value, list) else [value]
    bad = [v for v in ids if not isinstance(v, int) or not 0 <= v < len(names)]
    if bad:
        raise SourceError(
            f"{where}: '{column}' holds class id {bad[0]!r}, not a label (an unlabeled row?)"
        )
    return [names[v] for v in ids] if isinstance(value, list) else names[value]


def _class_names(feature: Any) -> list[str] | None:
    """The label names of a ClassLabel column (or a list of ClassLabel), else None."""
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, list) and inner:
        inner = inner[0]
    names = getattr(inner, "names", None)
    return list(names) if names else None
