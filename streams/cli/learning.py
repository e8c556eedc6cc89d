"""Online learning: `watch` (drift and feedback, job policy) and `trainer` (runs the jobs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from streams.cli.common import (
    Bootstrap,
    MetricsPort,
    ModelRepository,
    Verbose,
    err,
    settings_or_exit,
    setup_logging,
)


def watch(
    bootstrap_servers: Bootstrap = None,
    model_repository: ModelRepository = None,
    metrics_port: MetricsPort = None,
    verbose: Verbose = False,
) -> None:
    """Run the model watch: drift detectors, feedback join, hybrid head, job policy."""
    from streams.runtime import run_watch

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers,
        model_repository=model_repository,
        watch_metrics_port=metrics_port,
    )
    setup_logging(verbose)
    err.print(
        f"model watch: {settings.output_topic} + {settings.feedback_topic} -> "
        f"{settings.drift_topic}, {settings.jobs_topic}"
    )
    asyncio.run(run_watch(settings))


def trainer(
    bootstrap_servers: Bootstrap = None,
    model_repository: ModelRepository = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Cap optimizer steps per job (quick runs)")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run fine-tuning jobs from the jobs topic: train, shadow-evaluate, promote or reject."""
    from streams.runtime import run_trainer

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers,
        model_repository=model_repository,
        finetune_max_steps=max_steps,
    )
    setup_logging(verbose)
    err.print(f"trainer: {settings.jobs_topic} -> {settings.decisions_topic}")
    asyncio.run(run_trainer(settings))
