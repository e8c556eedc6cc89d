"""Data sources: JSON Lines, CSV, Parquet and a Hugging Face dataset directory read to the
same rows, and every way a source can be wrong named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.tasks import TaskHead
from serving.training.data import load_task_dir, read_splits, task_rows
from serving.training.sources import Columns, SourceError

EMOTION = TaskHead("emotion", ("anger", "joy", "neutral"), "multilabel")
ROWS = [
    {"text": "furious and delighted", "labels": ["anger", "joy"]},
    {"text": "just a day", "labels": ["neutral"]},
    {"text": "what joy", "labels": ["joy"]},
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "labels"])
        for r in rows:
            writer.writerow([r["text"], json.dumps(r["labels"])])


def write_parquet(path: Path, rows: list[dict[str, object]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize(
    "writer,suffix", [(write_jsonl, "jsonl"), (write_csv, "csv"), (write_parquet, "parquet")]
)
def test_every_file_format_reads_the_same_multilabel_rows(tmp_path: Path, writer, suffix) -> None:  # type: ignore[no-untyped-def]
    writer(tmp_path / f"train.{suffix}", ROWS)
    writer(tmp_path / f"validation.{suffix}", ROWS[:2])
    data = load_task_dir(tmp_path, EMOTION)
    assert [r.labels["emotion"] for r in data.train] == [("anger", "joy"), ("neutral",), ("joy",)]
    assert [r.text for r in data.val] == ["furious and delighted", "just a day"]
    assert data.test == []


def test_hub_loader_reads_a_local_dataset_with_class_ids_as_names(tmp_path: Path) -> None:
    """The `hf:NAME` path, through `datasets`, on a local directory (the hub is unreachable
    here): ClassLabel ids come back as label names, `validation` serves as val."""
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=list(EMOTION.labels))),
        }
    )
    rows = {
        "text": [r["text"] for r in ROWS],
        "labels": [[EMOTION.labels.index(x) for x in r["labels"]] for r in ROWS],
    }  # type: ignore[union-attr]
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "validation": datasets.Dataset.from_dict(rows, features=features),
        }
    )
    # load_dataset on a directory of parquet shards is the same call a hub name makes.
    for split in ("train", "validation"):
        ds[split].to_parquet(str(tmp_path / "hub" / f"{split}.parquet"))
    raw = read_splits(f"hf:{tmp_path / 'hub'}", Columns())
    assert sorted(raw) == ["train", "val"]
    rows_read = task_rows(raw["train"], EMOTION)
    assert rows_read[0].labels["emotion"] == ("anger", "joy")
    assert raw["train"][0].where.startswith("hf:")


def test_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no train split"):
        read_splits(tmp_path, Columns())
    write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "category": "joy"}])
    with pytest.raises(SourceError, match=r"train.jsonl:1: neither 'label' nor 'labels'"):
        read_splits(tmp_path, Columns())
    write_jsonl(tmp_path / "train.jsonl", [{"body": "x", "label": "joy"}])
    with pytest.raises(SourceError, match="missing or empty 'text'"):
        read_splits(tmp_path, Columns())
    raw = read_splits(tmp_path, Columns(text="body"))
    with pytest.raises(SourceError, match="'joy' is not one of sentiment's"):
        task_rows(raw["train"], TaskHead("sentiment", ("negative", "positive")))
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    raw = read_splits(tmp_path, Columns())
    with pytest.raises(SourceError, match="multi-class but the row carries a list"):
        task_rows(raw["train"], TaskHead("emotion", EMOTION.labels))
    with pytest.raises(SourceError, match="is not a directory"):
        read_splits(tmp_path / "nowhere", Columns())
