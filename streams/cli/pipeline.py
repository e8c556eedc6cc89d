"""Running the classify pipeline: `demo` (all of it, end to end), `broker` and `worker`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Annotated

import typer

from streams.cli.common import (
    Bootstrap,
    MetricsPort,
    ModelRepository,
    Topic,
    Verbose,
    err,
    settings_or_exit,
    setup_logging,
)


def demo(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Messages to publish")] = 600,
    workers: Annotated[int, typer.Option("--workers", "-k", min=1, help="Classify workers")] = 1,
    rate: Annotated[
        float, typer.Option(help="Publish rate in messages/s (0: as fast as possible)")
    ] = 0.0,
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic")] = None,
    backend: Annotated[str | None, typer.Option(help="onnx (in-process) or triton (local)")] = None,
) -> None:
    """Run the whole pipeline on an embedded broker and print a JSON summary line."""
    from streams.cli.demo import run_demo

    settings = settings_or_exit(topic_partitions=partitions, backend=backend)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from serving.triton.server import TritonError

    try:
        summary = asyncio.run(
            run_demo(settings, count=count, workers=workers, rate=rate, console=err)
        )
    except TritonError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    print(json.dumps(summary), flush=True)
    if summary["lost"]:
        raise typer.Exit(1)


def broker(
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on [FEEDPULSE_BROKER_LISTEN]")
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in-memory) in the foreground."""
    from streams.kafka.broker import EmbeddedBroker

    settings = settings_or_exit(broker_listen=listen)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # before the child starts: no orphan window
    embedded = EmbeddedBroker(settings.broker_listen)
    code = 0
    try:
        embedded.start()
        err.print(
            f"broker listening on {embedded.bootstrap_servers} (in-memory storage); Ctrl-C stops it"
        )
        code = embedded.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()
    raise typer.Exit(code)


def worker(
    bootstrap_servers: Bootstrap = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group")] = None,
    input_topic: Topic = None,
    output_topic: Topic = None,
    dlq_topic: Topic = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Flush a micro-batch at this many items")
    ] = None,
    max_wait_ms: Annotated[
        int | None, typer.Option(help="...or this long after its first item")
    ] = None,
    model_repository: ModelRepository = None,
    model_variant: Annotated[str | None, typer.Option(help="int8 or fp32")] = None,
    metrics_port: MetricsPort = None,
    backend: Annotated[str | None, typer.Option(help="onnx (in-process) or triton")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC HOST:PORT")] = None,
    exactly_once: Annotated[
        bool | None,
        typer.Option(
            "--exactly-once/--at-least-once",
            help="Kafka transactions per batch (needs a broker with transactions) "
            "[FEEDPULSE_EXACTLY_ONCE]",
            show_default=False,
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run a classify worker against any Kafka bootstrap servers until SIGTERM/SIGINT."""
    from serving.model_store import ModelNotFoundError
    from streams.classify.delivery import ProduceFailedError
    from streams.classify.producer import TransactionsUnsupportedError
    from streams.runtime import run_worker

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        input_topic=input_topic,
        output_topic=output_topic,
        dlq_topic=dlq_topic,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        model_repository=model_repository,
        model_variant=model_variant,
        metrics_port=metrics_port,
        backend=backend,
        triton_url=triton_url,
        exactly_once=exactly_once,
    )
    setup_logging(verbose)
    try:
        asyncio.run(run_worker(settings))
    except (ModelNotFoundError, TransactionsUnsupportedError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except ProduceFailedError as exc:
        err.print(f"[red]stopping without committing: {exc}[/]")
        raise typer.Exit(1) from exc
