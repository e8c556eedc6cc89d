"""Task declarations: the built-in pair, kinds and labels read from data, and every bad
declaration stopped with a clear error before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.tasks import DEFAULT_TASKS
from serving.training.declaration import (
    default_declaration,
    load_declaration,
    load_declared,
    with_data,
)
from serving.training.sources import SourceError

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def write_set(directory: Path, rows: list[dict[str, object]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def declare(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(body)
    return path


def test_the_built_in_declaration_is_todays_two_heads() -> None:
    sets = load_declared(default_declaration(SHARED_DATA), limit=5)
    assert tuple(d.task for d in sets) == DEFAULT_TASKS


def test_any_name_takes_kind_and_labels_from_the_data() -> None:
    declared = with_data(
        default_declaration(SHARED_DATA), {"emotion": SHARED_DATA / "goemotions_ekman"}
    )
    (emotion,) = load_declared(declared, limit=50)
    assert emotion.task.kind == "multilabel"
    assert emotion.task.labels == (
        "anger",
        "disgust",
        "fear",
        "joy",
        "neutral",
        "sadness",
        "surprise",
    )
    assert all(isinstance(r.labels["emotion"], tuple) for r in emotion.train)


def test_a_declared_file_with_relative_data_and_columns(tmp_path: Path) -> None:
    write_set(
        tmp_path / "spam", [{"body": "buy now", "flag": "spam"}, {"body": "hi mum", "flag": "ham"}]
    )
    path = declare(
        tmp_path,
        '[[task]]\nname = "spam"\ndata = "spam"\ntext_column = "body"\nlabel_column = "flag"\n',
    )
    (spam,) = load_declared(load_declaration(path))
    assert spam.task.labels == ("ham", "spam") and spam.task.kind == "multiclass"
    assert len(spam.train) + len(spam.val) == 2


@pytest.mark.parametrize(
    "body,rows,error",
    [
        ('[[task]]\nname = "spam"\ndata = "missing"\n', None, "not a directory"),
        (
            '[[task]]\nname = "spam"\ndata = "spam"\nlabel_column = "flag"\n',
            [{"text": "x", "label": "a"}],
            "neither 'flag'",
        ),
        (
            '[[task]]\nname = "spam"\ndata = "spam"\nlabels = ["spam", "ham"]\n',
            [{"text": "x", "label": "eggs"}],
            "'eggs' is not one of spam's",
        ),
        ('[[task]]\nname = "spam"\ndata = "spam"\n', [{"text": "x", "label": "spam"}], "one label"),
        ('[[task]]\nname = "spam"\nlabels = ["spam"]\n', None, "two or more distinct labels"),
        ('[[task]]\nname = "spam"\n[[task]]\nname = "spam"\n', None, "declared more than once"),
        ('[[task]]\nname = "Spam Flag"\n', None, "task.0.name"),
        ('[[task]]\nname = "spam"\nkind = "ranking"\n', None, "task.0.kind"),
        ("[[task]\n", None, "not TOML"),
    ],
)
def test_bad_declarations_fail_before_training(tmp_path: Path, body: str, rows, error: str) -> None:  # type: ignore[no-untyped-def]
    if rows is not None:
        write_set(tmp_path / "spam", rows)
    with pytest.raises(SourceError, match=error):
        load_declared(load_declaration(declare(tmp_path, body)))


def test_a_missing_declaration_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"tasks\.toml is missing"):
        load_declaration(tmp_path / "tasks.toml")


def test_short_form_keeps_the_declarations_head_order(tmp_path: Path) -> None:
    declared = with_data(
        default_declaration(SHARED_DATA),
        {"emotion": tmp_path, "topic": tmp_path, "sentiment": tmp_path},
    )
    assert [t.name for t in declared.tasks] == ["sentiment", "topic", "emotion"]
