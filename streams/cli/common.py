"""What the commands share: the stderr console, settings and logging set-up, option types."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings, load_settings

# Soft wrap: messages and paths must reach logs whole, not cut at 80 columns.
err = Console(stderr=True, soft_wrap=True)

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers", "-b", help="Kafka bootstrap servers [FEEDPULSE_BOOTSTRAP_SERVERS]"
    ),
]
Topic = Annotated[str | None, typer.Option(help="Topic name (default from settings)")]
ModelRepository = Annotated[Path | None, typer.Option(help="Model repository directory")]
MetricsPort = Annotated[int | None, typer.Option(help="Prometheus port (0: off)")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def settings_or_exit(**overrides: Any) -> Settings:
    """The settings with the given overrides; invalid ones are reported and exit with 2."""
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        err.print(f"[red]invalid settings:[/]\n{exc}")
        raise typer.Exit(2) from exc


def setup_logging(verbose: bool) -> None:
    """Log to stderr, at DEBUG when verbose; aiokafka's chatter only from WARNING up."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
