"""`feedpulse train`: fit the default heads and export a new model version, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from serving.model_store import ModelNotFoundError, ModelVersion, load_version
from streams.settings import Settings


def train_and_export(
    settings: Settings, *, data: Path | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Train the heads on `data` (the shipped seed set by default), export, return the report."""
    from serving.export import export_version
    from serving.multihead import default_checkpoint
    from serving.train_heads import train_heads

    console = console or Console(stderr=True)
    checkpoint = settings.base_model or default_checkpoint()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        model, tokenizer, metrics = train_heads(
            data, checkpoint=checkpoint, max_length=settings.max_length, progress=report
        )
        export_task = progress.add_task("exporting ONNX fp32 + int8", total=None)
        version = export_version(
            model,
            tokenizer,
            repository=settings.model_repository,
            name=settings.model_name,
            max_length=settings.max_length,
            base_checkpoint=checkpoint,
            metrics=metrics,
        )
        progress.update(export_task, total=1, completed=1)
    return {"model": version.name, "version": version.version, "path": str(version.path), **metrics}


def ensure_model(settings: Settings, console: Console | None = None) -> ModelVersion:
    """The configured model version; on a fresh machine, train and export the default first."""
    try:
        return load_version(settings.model_repository, settings.model_name, settings.model_version)
    except ModelNotFoundError:
        if settings.model_version is not None:
            raise
        console = console or Console(stderr=True)
        console.print("[bold]No model yet:[/] training the default heads (one-off, under a minute)")
        train_and_export(settings, console=console)
        return load_version(settings.model_repository, settings.model_name)
