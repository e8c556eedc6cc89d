"""`feedpulse train`: fine-tune (or fit heads), export a new version, report, with progress."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from online.trainer import PromotionRule, TrainerConfig
from serving.model_store import ModelNotFoundError, ModelVersion, load_version
from serving.training.data import TaskData, sample
from serving.training.declaration import (
    DEFAULT_DATA,
    Declaration,
    data_source,
    default_declaration,
    load_declaration,
    load_declared,
    with_data,
)
from serving.training.device import placement
from serving.training.finetune import FineTuneConfig
from serving.training.pipeline import Mode, TrainPlan
from serving.training.progress import TrainProgress
from serving.training.sources import SourceError
from streams.settings import Settings

# Starting from a trained version: gentler steps, the heads are already fitted.
# What the first run takes on the default data on a 2-core machine (README).
FIRST_RUN_MINUTES = 2
INCREMENTAL = FineTuneConfig(epochs=3, lr=3e-5, head_lr=3e-4, eval_every=100)
REPLAY_VAL_ROWS = 1000


def default_task_dirs(settings: Settings) -> dict[str, Path]:
    """`{task: directory}` of the default training data (TweetEval, AG News)."""
    return {task: settings.data_dir / folder for task, folder in DEFAULT_DATA.items()}


def task_declaration(settings: Settings) -> Declaration:
    """The declared tasks: FEEDPULSE_TASKS_FILE, else the built-in sentiment and topic."""
    if settings.tasks_file is not None:
        return load_declaration(settings.tasks_file)
    return default_declaration(settings.data_dir)


def load_sets(
    task_dirs: Mapping[str, Path],
    *,
    declaration: Declaration | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[TaskData]:
    """Read each `{task: directory}` (train, optional val and test files), as `declaration`
    declares the task (the built-in one by default), or from the data for a new name."""
    declared = with_data(declaration or default_declaration(Path(".")), task_dirs)
    return load_declared(declared, limit=limit, seed=seed)


def replay_sets(sets: Sequence[TaskData], rows: int, *, seed: int = 0) -> list[TaskData]:
    """Old-domain sets: `rows` training rows in all (a seeded sample), a small val split."""
    share = rows // max(1, len(sets))
    return [
        dataclasses.replace(
            data,
            train=sample(data.train, share, seed),
            val=sample(data.val, REPLAY_VAL_ROWS, seed),
        )
        for data in sets
    ]


def _figures(figures: Mapping[str, float]) -> str:
    return "  ".join(
        f"{k.replace('_per_s', '/s').replace('_', ' ')} {v:.3g}" for k, v in figures.items()
    )


@contextmanager
def rich_progress(console: Console, every_s: float = 15.0) -> Iterator[TrainProgress]:
    """A progress sink drawing one bar per stage, with the live loss and rows/s.

    Off a terminal (logs, CI) it prints a plain line per stage every `every_s` seconds and
    when the stage completes, since redrawn bars would never reach the log.
    """
    if not console.is_terminal:
        last: dict[str, float] = {}

        def log_line(stage: str, done: int, total: int, **figures: float) -> None:
            now = time.monotonic()
            if done < total and now - last.get(stage, 0.0) < every_s:
                return
            last[stage] = now
            console.print(f"{stage}: {done}/{total}  {_figures(figures)}".rstrip(), soft_wrap=True)

        yield log_line
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        stages: dict[str, Any] = {}

        def report(stage: str, done: int, total: int, **figures: float) -> None:
            text = _figures(figures)
            if stage not in stages:
                stages[stage] = progress.add_task(stage, total=total, figures=text)
            progress.update(stages[stage], completed=done, total=total, figures=text)

        yield report


def resolve_version(settings: Settings, version: str) -> ModelVersion:
    """A version by number, or `latest`."""
    if version != "latest" and not version.isdigit():
        raise ValueError(f"--from-version takes a version number or 'latest', not {version!r}")
    number = None if version == "latest" else int(version)
    return load_version(settings.model_repository, settings.model_name, number)


def run_training(
    settings: Settings,
    *,
    mode: Mode = "finetune",
    task_dirs: Mapping[str, Path] | None = None,
    from_version: str | None = None,
    replay_dirs: Mapping[str, Path] | None = None,
    replay_rows: int = 4000,
    config: FineTuneConfig | None = None,
    limit: int | None = None,
    resume: bool = False,
    reason: str = "feedpulse train",
    variants: Sequence[str] = ("fp32", "int8"),
    console: Console | None = None,
) -> dict[str, Any]:
    """Train per the arguments, export a version with reports and a card (test figures for
    each of `variants`); return the summary."""
    from serving.training.pipeline import train_version

    console = console or Console(stderr=True)
    base_version = resolve_version(settings, from_version) if from_version else None
    config = config or (INCREMENTAL if base_version else FineTuneConfig())
    if mode == "finetune":
        # A device or precision this machine lacks stops the run here, before data loads.
        placement(config.device, config.precision)
    declared = task_declaration(settings)
    if task_dirs:
        declared = with_data(declared, task_dirs)
    sets = load_declared(declared, limit=limit, seed=config.seed)
    replay = (
        replay_sets(
            load_sets(
                replay_dirs, declaration=task_declaration(settings), limit=limit, seed=config.seed
            ),
            replay_rows,
            seed=config.seed,
        )
        if replay_dirs
        else []
    )
    plan = TrainPlan(
        sets=sets,
        mode=mode,
        base_checkpoint=settings.base_model,
        base_version=base_version,
        replay=replay,
        config=config,
        serve_max_length=settings.max_length,
        variants=variants,
        reason=reason,
    )
    run_name = f"from-v{base_version.version}" if base_version else "fresh"
    checkpoint_dir = settings.checkpoint_dir / settings.model_name / run_name
    with rich_progress(console) as progress:
        _, summary = train_version(
            plan,
            repository=settings.model_repository,
            name=settings.model_name,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
        )
    return summary


def train_seed_heads(
    settings: Settings, *, data: Path | None = None, console: Console | None = None
) -> dict[str, Any]:
    """The quick default: heads on the frozen encoder from the shipped seed set; export."""
    from serving.export import export_version
    from serving.multihead import default_checkpoint
    from serving.training.heads import train_heads

    console = console or Console(stderr=True)
    checkpoint = settings.base_model or default_checkpoint()
    with rich_progress(console) as progress:
        model, tokenizer, metrics = train_heads(
            data, checkpoint=checkpoint, max_length=settings.max_length, progress=progress
        )
        version = export_version(
            model,
            tokenizer,
            repository=settings.model_repository,
            name=settings.model_name,
            max_length=settings.max_length,
            base_checkpoint=checkpoint,
            metrics=metrics,
            training={"mode": "heads", "reason": "seed heads", "data": []},
        )
    return {"model": version.name, "version": version.version, "path": str(version.path), **metrics}


def ensure_model(settings: Settings, console: Console | None = None) -> ModelVersion:
    """The configured model version; on a fresh machine, train and export one first."""
    try:
        return load_version(settings.model_repository, settings.model_name, settings.model_version)
    except ModelNotFoundError:
        if settings.model_version is not None:
            raise
        first_run_model(settings, console or Console(stderr=True))
        return load_version(settings.model_repository, settings.model_name)


def first_run_model(settings: Settings, console: Console) -> dict[str, Any]:
    """A machine's first model: the fast path (frozen encoder, fitted heads) on the declared
    tasks' data, tested on its test splits as served; heads on the shipped seed set where
    the default data is absent. Returns the training summary."""
    declared = task_declaration(settings)
    missing = [
        str(source)
        for spec in declared.tasks
        if isinstance(source := data_source(spec, declared.base), Path) and not source.exists()
    ]
    if missing and settings.tasks_file is None:
        console.print(
            f"[bold]No model yet:[/] the default data is not here ({', '.join(missing)}), so "
            "fitting heads on the shipped seed set (one-off, under a minute); "
            "`feedpulse train` trains on real data"
        )
        return train_seed_heads(settings, console=console)
    if missing:
        raise SourceError(f"{settings.tasks_file}: the declared data is missing: {missing}")
    names = ", ".join(f"{t.name} ({Path(str(t.data)).name})" for t in declared.tasks)
    console.print(
        f"[bold]No model yet:[/] fitting heads on the frozen encoder over {names}, then "
        f"testing them as served (one-off, about {FIRST_RUN_MINUTES} minutes here); "
        "`feedpulse train` fine-tunes the full model"
    )
    return run_training(
        settings,
        mode="heads",
        variants=(settings.model_variant,),
        reason="first run: fast path on the declared data",
        console=console,
    )


def trainer_config(settings: Settings) -> TrainerConfig:
    """The online trainer's setup: replay of the original training data (its test rows
    sampled to check forgetting), incremental fine-tuning and the promotion rule.

    Early stopping watches the new domain only (replay sets carry no val rows): measured
    on the domain-switch scenario, a score averaged with the old domains stopped at a
    third of the new domain's gain. Forgetting is the promotion rule's to judge.
    """
    seed = INCREMENTAL.seed
    replay = [
        dataclasses.replace(
            data,
            val=[],
            test=sample(data.test, settings.finetune_old_eval_rows, seed),
        )
        for data in replay_sets(
            load_declared(task_declaration(settings), seed=seed),
            settings.finetune_replay_rows,
            seed=seed,
        )
    ]
    finetune = dataclasses.replace(
        INCREMENTAL,
        epochs=settings.finetune_epochs,
        max_steps=settings.finetune_max_steps,
        batch_size=settings.finetune_batch_size,
        lr=settings.finetune_lr,
        head_lr=settings.finetune_head_lr,
        device=settings.finetune_device,
        adapter=settings.finetune_adapter,
    )
    return TrainerConfig(
        repository=settings.model_repository,
        name=settings.model_name,
        replay=replay,
        finetune=finetune,
        rule=PromotionRule(margin=settings.promote_margin, max_drop=settings.promote_max_drop),
        variant=settings.model_variant,
        serve_max_length=settings.max_length,
    )
