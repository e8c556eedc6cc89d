"""`train`: fine-tune (or fit heads) offline and export a new version, with reports."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streams.cli.common import ModelRepository, err, settings_or_exit

if TYPE_CHECKING:
    from serving.training.finetune import FineTuneConfig
    from serving.training.pipeline import Mode

TaskDirs = Annotated[
    list[str] | None,
    typer.Option(
        "--task",
        help="TASK=DIR: train TASK on DIR/{train,val,test}.{jsonl,csv,parquet} ({text, label} "
        "rows; a 'labels' list makes it multi-label) or DIR=hf:NAME (a Hugging Face dataset). "
        "Any name: a task not declared takes its kind and labels from the data; repeatable "
        "[default: the declared tasks, see --tasks]",
    ),
]
ReplayDirs = Annotated[
    list[str] | None,
    typer.Option(help="TASK=DIR: old-domain data mixed in against forgetting; repeatable"),
]
TasksFile = Annotated[
    Path | None,
    typer.Option(
        "--tasks",
        dir_okay=False,
        help="TOML task declaration (name, kind, labels, data per [[task]]) "
        "[env FEEDPULSE_TASKS_FILE; default: sentiment on TweetEval, topic on AG News]",
    ),
]
SeedData = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Fit heads only, on a multi-task JSONL (text, sentiment, topic) like the seed set",
    ),
]
FromVersion = Annotated[
    str | None,
    typer.Option(help="Incremental: start from this exported version (a number or latest)"),
]
AdapterOption = Annotated[
    str | None,
    typer.Option(
        help="full (every encoder weight) or lora (LoRA adapters, merged at export) [default: full]"
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="Where to fine-tune: auto (a GPU where torch sees one, else the CPU), cpu, cuda "
        "or cuda:N [default: auto]",
    ),
]


def _task_dirs(values: list[str] | None) -> dict[str, Path] | None:
    if not values:
        return None
    dirs: dict[str, Path] = {}
    for value in values:
        task, sep, directory = value.partition("=")
        if not sep or not task or not directory:
            raise typer.BadParameter(f"expected TASK=DIR, got {value!r}")
        dirs[task] = Path(directory)
    return dirs


def _mode(mode: str) -> Mode:
    if mode not in ("finetune", "heads"):
        raise typer.BadParameter(f"--mode must be finetune or heads, not {mode!r}")
    return "heads" if mode == "heads" else "finetune"


def _check_adapter(adapter: str | None) -> None:
    if adapter not in (None, "full", "lora"):
        raise typer.BadParameter(f"--adapter must be full or lora, not {adapter!r}")


def _check_placement(precision: str | None, device: str | None) -> None:
    if precision not in (None, "auto", "bf16", "fp16", "fp32"):
        raise typer.BadParameter(f"--precision must be auto, bf16, fp16 or fp32, not {precision!r}")
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise typer.BadParameter(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")


def _config(defaults: FineTuneConfig, **overrides: Any) -> FineTuneConfig:
    """`defaults` with the options the user gave (those not None) in their place."""
    return dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})


def train(
    mode: Annotated[
        str, typer.Option(help="finetune (encoder and heads) or heads (frozen encoder, fast)")
    ] = "finetune",
    task: TaskDirs = None,
    tasks: TasksFile = None,
    from_version: FromVersion = None,
    replay: ReplayDirs = None,
    replay_rows: Annotated[int, typer.Option(min=0, help="Replay rows in all")] = 4000,
    seed_data: SeedData = None,
    base_model: Annotated[
        str | None, typer.Option(help="Hugging Face checkpoint directory or hub id")
    ] = None,
    model_repository: ModelRepository = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the data")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Encoder learning rate")] = None,
    eval_every: Annotated[int | None, typer.Option(min=1, help="Validate every N steps")] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N validations without improvement")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16, fp16 (CUDA) or fp32")] = None,
    device: DeviceOption = None,
    adapter: AdapterOption = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling, order and init")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use at most N rows per split (quick runs)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run")] = False,
) -> None:
    """Fine-tune the encoder and heads, export a new version (ONNX fp32 + int8) with reports.

    Writes reports/ (classification reports, confusion matrices, JSON) and MODEL_CARD.md
    beside the exported version and prints a JSON summary.
    """
    from serving.training.finetune import FineTuneConfig
    from streams.learning.training import INCREMENTAL, run_training, train_seed_heads

    settings = settings_or_exit(
        base_model=base_model, model_repository=model_repository, tasks_file=tasks
    )
    train_mode = _mode(mode)
    _check_placement(precision, device)
    _check_adapter(adapter)
    if seed_data is not None:
        report = train_seed_heads(settings, data=seed_data, console=err)
        print(json.dumps(report), flush=True)
        return
    config = _config(
        INCREMENTAL if from_version else FineTuneConfig(),
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        patience=patience,
        precision=precision,
        device=device,
        adapter=adapter,
        seed=seed,
    )
    try:
        report = run_training(
            settings,
            mode=train_mode,
            task_dirs=_task_dirs(task),
            from_version=from_version,
            replay_dirs=_task_dirs(replay),
            replay_rows=replay_rows,
            config=config,
            limit=limit,
            resume=resume,
            console=err,
        )
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    print(json.dumps(report), flush=True)
