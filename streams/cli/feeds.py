"""Feeds in and out of Kafka by hand: `publish` a file, `tail` a topic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import Bootstrap, Topic, err, settings_or_exit


def publish_feed(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV or text file")
    ],
    bootstrap_servers: Bootstrap = None,
    topic: Topic = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, csv or text")] = "auto",
    rate: Annotated[float, typer.Option(help="Messages/s (0: as fast as possible)")] = 0.0,
) -> None:
    """Send a feed file to the input topic, one message per line or row."""
    from streams.kafka.publish import publish, read_feed

    if fmt not in ("auto", "jsonl", "csv", "text"):
        err.print(f"[red]unknown format {fmt!r}[/]")
        raise typer.Exit(2)
    settings = settings_or_exit(bootstrap_servers=bootstrap_servers)
    try:
        records = list(read_feed(file, fmt))  # type: ignore[arg-type]
    except (ValueError, UnicodeDecodeError) as exc:
        err.print(f"[red]{file}: {exc}[/]")
        raise typer.Exit(2) from exc
    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"publishing {file.name}", total=len(records))
        positions = asyncio.run(
            publish(
                settings,
                records,
                topic=topic,
                rate=rate,
                on_sent=lambda n: progress.update(task, completed=n),
            )
        )
    err.print(f"published {len(positions)} messages to {topic or settings.input_topic}")


def tail(
    topic: Annotated[str, typer.Argument(help="Topic to print, e.g. feeds.labeled or feeds.dlq")],
    bootstrap_servers: Bootstrap = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning/--latest")] = True,
    count: Annotated[int | None, typer.Option("--count", "-n", help="Stop after N records")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many idle seconds")
    ] = None,
) -> None:
    """Print a topic's records as JSON lines (dead letters with their headers)."""
    from streams.kafka.tail import read_topics, render_record

    settings = settings_or_exit(bootstrap_servers=bootstrap_servers)

    async def run() -> None:
        seen = 0
        async for rec in read_topics(
            settings, [topic], from_beginning=from_beginning, idle_timeout_s=idle_timeout
        ):
            print(render_record(rec), flush=True)
            seen += 1
            if count is not None and seen >= count:
                return

    try:
        asyncio.run(run())
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass
