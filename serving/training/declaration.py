"""Task declarations: which heads a model has, of what kind, with which labels, trained on
what data - one TOML file, with today's two tasks built in.

    [[task]]
    name = "emotion"                              # head and output name
    kind = "multilabel"                           # or "multiclass"; default: from the data
    labels = ["anger", "joy", "neutral"]          # default: every label the data uses
    data = "../shared/data/goemotions_ekman"      # a directory of split files, or "hf:NAME"
    text_column = "text"                          # optional column names
    label_column = "labels"

Relative `data` paths resolve against the declaration file's directory (the built-in
tasks' against FEEDPULSE_DATA_DIR).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from serving.tasks import DEFAULT_TASKS, TaskHead, TaskKind
from serving.training.data import TaskData, read_splits, task_data
from serving.training.sources import HUB_PREFIX, Columns, RawRow, SourceError

# Names become ONNX output names (`<name>_logits`), metric label values and JSON keys.
TaskName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
DEFAULT_DATA = {"sentiment": "tweeteval_sentiment", "topic": "ag_news"}


class TaskSpec(BaseModel):
    """One declared task."""

    model_config = ConfigDict(extra="forbid")
    name: TaskName
    kind: TaskKind | None = None
    labels: list[Label] | None = None
    data: str | None = None
    text_column: str = "text"
    label_column: str | None = None

    @field_validator("labels")
    @classmethod
    def _two_or_more(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) < 2:
            raise ValueError("a task needs two or more distinct labels")
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError("labels are listed more than once")
        return labels

    def columns(self) -> Columns:
        """The column map to read this task's data with."""
        if self.label_column is None:
            return Columns(text=self.text_column)
        return Columns(text=self.text_column, label=self.label_column, labels=self.label_column)


class Declaration(BaseModel):
    """Every declared task, in output order (TOML: an array of `[[task]]` tables)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    tasks: list[TaskSpec] = Field(alias="task", min_length=1)
    base: Path = Field(default=Path("."), exclude=True)

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"task {twice[0]!r} is declared more than once")
        return tasks

    def get(self, name: str) -> TaskSpec | None:
        """The task called `name`, if declared."""
        return next((t for t in self.tasks if t.name == name), None)


def default_declaration(data_dir: Path) -> Declaration:
    """Today's tasks: sentiment on TweetEval and topic on AG News, under `data_dir`."""
    return Declaration(
        task=[
            TaskSpec(name=t.name, kind=t.kind, labels=list(t.labels), data=DEFAULT_DATA[t.name])
            for t in DEFAULT_TASKS
        ],
        base=data_dir,
    )


def load_declaration(path: Path) -> Declaration:
    """Read a TOML declaration; every error names the file and what is wrong."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"task declaration {path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"task declaration {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{path}: not TOML ({exc})") from None
    try:
        return Declaration.model_validate({**raw, "base": path.parent})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SourceError(f"{path}: {where}: {first['msg']}") from None


def with_data(declaration: Declaration, dirs: Mapping[str, Path]) -> Declaration:
    """The declared tasks named in `dirs` with their data there (`--task NAME=DIR`); a name
    not declared becomes a task whose kind and labels come from the data."""
    # Declared tasks keep the declaration's order (the heads' and outputs' order), new
    # ones follow in the order given.
    declared = [t.name for t in declaration.tasks]
    order = sorted(dirs, key=lambda n: declared.index(n) if n in declared else len(declared))
    specs = []
    for name in order:
        directory = dirs[name]
        spec = declaration.get(name) or _new_spec(name)
        hub = str(directory).startswith(HUB_PREFIX)
        data = str(directory) if hub else str(directory.resolve())
        specs.append(spec.model_copy(update={"data": data}))
    return Declaration(task=specs, base=declaration.base)


def _new_spec(name: str) -> TaskSpec:
    """A task declared by name only, or why the name cannot be one."""
    try:
        return TaskSpec(name=name)
    except ValidationError:
        raise SourceError(
            f"task name {name!r}: use lower-case letters, digits and '_' (up to 32), "
            "starting with a letter"
        ) from None


def resolve_task(spec: TaskSpec, raw: Mapping[str, Sequence[RawRow]]) -> TaskHead:
    """The head `spec` declares, its kind and labels filled in from the data's rows."""
    rows = [row for split in raw.values() for row in split]
    kind: TaskKind = spec.kind or (
        "multilabel" if any(isinstance(r.gold, list) for r in rows) else "multiclass"
    )
    if spec.labels is not None:
        labels = tuple(spec.labels)
    else:
        found = {g for r in rows for g in ([r.gold] if isinstance(r.gold, str) else r.gold)}
        labels = tuple(sorted(found))
    if len(labels) < 2:
        raise SourceError(
            f"task {spec.name!r}: its data uses one label ({list(labels)}); a classifier "
            "needs two or more"
        )
    return TaskHead(spec.name, labels, kind)


def data_source(spec: TaskSpec, base: Path) -> Path | str:
    """Where `spec`'s data is: a hub name as given, else a path against `base`."""
    if spec.data is None:
        raise SourceError(f"task {spec.name!r} declares no data")
    if spec.data.startswith(HUB_PREFIX):
        return spec.data
    path = Path(spec.data)
    return path if path.is_absolute() else base / path


def load_declared(
    declaration: Declaration, *, limit: int | None = None, seed: int = 0
) -> list[TaskData]:
    """Every declared task's data, read and checked in full before any training starts."""
    sets = []
    for spec in declaration.tasks:
        source = data_source(spec, declaration.base)
        raw = read_splits(source, spec.columns())
        task = resolve_task(spec, raw)
        sets.append(task_data(task, raw, str(source), limit=limit, seed=seed))
    return sets
