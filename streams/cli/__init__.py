"""The `feedpulse` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings, load_settings

app = typer.Typer(
    help="Streaming classification of news and social feeds: Kafka in, labels out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Soft wrap: messages and paths must reach logs whole, not cut at 80 columns.
err = Console(stderr=True, soft_wrap=True)

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers", "-b", help="Kafka bootstrap servers [FEEDPULSE_BOOTSTRAP_SERVERS]"
    ),
]
Topic = Annotated[str | None, typer.Option(help="Topic name (default from settings)")]


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        err.print(f"[red]invalid settings:[/]\n{exc}")
        raise typer.Exit(2) from exc


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@app.command()
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

    settings = _settings(topic_partitions=partitions, backend=backend)
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


@app.command()
def broker(
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on [FEEDPULSE_BROKER_LISTEN]")
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in-memory) in the foreground."""
    from streams.kafka.broker import EmbeddedBroker

    settings = _settings(broker_listen=listen)

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


@app.command()
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
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    model_variant: Annotated[str | None, typer.Option(help="int8 or fp32")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0: off)")] = None,
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a classify worker against any Kafka bootstrap servers until SIGTERM/SIGINT."""
    from serving.model_store import ModelNotFoundError
    from streams.classify.worker import ProduceFailedError, TransactionsUnsupportedError
    from streams.runtime import run_worker

    settings = _settings(
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
    _logging(verbose)
    try:
        asyncio.run(run_worker(settings))
    except (ModelNotFoundError, TransactionsUnsupportedError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except ProduceFailedError as exc:
        err.print(f"[red]stopping without committing: {exc}[/]")
        raise typer.Exit(1) from exc


@app.command("publish")
def publish_cmd(
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
    settings = _settings(bootstrap_servers=bootstrap_servers)
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


@app.command()
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

    settings = _settings(bootstrap_servers=bootstrap_servers)

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


@app.command()
def alerts(
    bootstrap_servers: Bootstrap = None,
    window_s: Annotated[float | None, typer.Option(help="Tumbling window length, seconds")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Deviations above baseline that fire an alert")
    ] = None,
    min_volume: Annotated[
        int | None, typer.Option(help="Items a window needs before it can alert")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0: off)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run an alert worker (faust): sentiment spikes per key from the labeled topic."""
    import faust
    from prometheus_client import CollectorRegistry

    from streams.alerts.app import build_alert_app
    from streams.kafka.topics import ensure_topics
    from streams.metrics import serve_metrics

    settings = _settings(
        bootstrap_servers=bootstrap_servers,
        alert_window_s=window_s,
        alert_threshold=threshold,
        alert_min_volume=min_volume,
        alert_metrics_port=metrics_port,
    )
    _logging(verbose)
    for noisy in ("faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    asyncio.run(ensure_topics(settings, [settings.output_topic, settings.alerts_topic]))
    registry = CollectorRegistry()
    serve_metrics(registry, settings.metrics_host, settings.alert_metrics_port)
    app_ = build_alert_app(settings, registry)
    err.print(
        f"alert worker: {settings.output_topic} -> {settings.alerts_topic}, "
        f"{settings.alert_window_s:g} s windows"
    )
    faust.Worker(
        app_, loglevel="DEBUG" if verbose else "WARNING", quiet=True
    ).execute_from_commandline()


@app.command()
def watch(
    bootstrap_servers: Bootstrap = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0: off)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the model watch: drift detectors, feedback join, hybrid head, job policy."""
    from streams.runtime import run_watch

    settings = _settings(
        bootstrap_servers=bootstrap_servers,
        model_repository=model_repository,
        watch_metrics_port=metrics_port,
    )
    _logging(verbose)
    err.print(
        f"model watch: {settings.output_topic} + {settings.feedback_topic} -> "
        f"{settings.drift_topic}, {settings.jobs_topic}"
    )
    asyncio.run(run_watch(settings))


@app.command()
def trainer(
    bootstrap_servers: Bootstrap = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Cap optimizer steps per job (quick runs)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run fine-tuning jobs from the jobs topic: train, shadow-evaluate, promote or reject."""
    from streams.runtime import run_trainer

    settings = _settings(
        bootstrap_servers=bootstrap_servers,
        model_repository=model_repository,
        finetune_max_steps=max_steps,
    )
    _logging(verbose)
    err.print(f"trainer: {settings.jobs_topic} -> {settings.decisions_topic}")
    asyncio.run(run_trainer(settings))


model_app = typer.Typer(help="Model versions: list, promote, roll back.", no_args_is_help=True)
app.add_typer(model_app, name="model")
RepoOption = Annotated[Path | None, typer.Option(help="Model repository directory")]
AnnounceOption = Annotated[
    bool, typer.Option(help="Also publish the change on the decisions topic")
]


def _announce(settings: Settings, decision: Any) -> None:
    """Publish a manual change on the decisions topic; a missing broker only warns."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka.clients import kafka_client_options

    async def send() -> None:
        producer = AIOKafkaProducer(**kafka_client_options(settings), request_timeout_ms=5000)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.decisions_topic, decision.encode(), key=settings.model_name.encode()
            )
        finally:
            await producer.stop()

    try:
        asyncio.run(asyncio.wait_for(send(), timeout=15))
    except Exception as exc:  # the change on disk stands; the announcement is a courtesy
        err.print(f"[yellow]not announced on {settings.decisions_topic}: {exc!r}[/]")


@model_app.command("list")
def model_list(model_repository: RepoOption = None) -> None:
    """Served, candidate and retired versions, with their test figures (JSON lines)."""
    from serving.model_store import version_states

    settings = _settings(model_repository=model_repository)
    for state, version in version_states(settings.model_repository, settings.model_name):
        training = version.manifest.get("training", {})
        print(
            json.dumps(
                {
                    "version": version.version,
                    "state": state,
                    "created": version.manifest.get("created"),
                    "reason": training.get("reason"),
                    "test": version.manifest.get("evaluation", {}).get("test", {}),
                }
            )
        )


@model_app.command("promote")
def model_promote(
    version: Annotated[int, typer.Argument(help="Candidate or retired version to serve")],
    model_repository: RepoOption = None,
    announce: AnnounceOption = True,
) -> None:
    """Serve a candidate (or re-serve a retired version newer than the served one)."""
    from online.jobs import Decision
    from serving.model_store import ModelNotFoundError, promote_version, serving_version

    settings = _settings(model_repository=model_repository)
    repo, name = settings.model_repository, settings.model_name
    before = serving_version(repo, name) or 0
    try:
        promote_version(repo, name, version)
    except (ModelNotFoundError, ValueError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    decision = Decision("manual", name, "promoted", "feedpulse model promote", before, version)
    print(json.dumps(dataclasses.asdict(decision)))
    if announce:
        _announce(settings, decision)


@model_app.command("rollback")
def model_rollback(model_repository: RepoOption = None, announce: AnnounceOption = True) -> None:
    """Return to the previous version: the served one moves aside (it can be re-promoted)."""
    from online.jobs import Decision
    from serving.model_store import ModelNotFoundError, retire_newest

    settings = _settings(model_repository=model_repository)
    try:
        retired, served = retire_newest(settings.model_repository, settings.model_name)
    except ModelNotFoundError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    decision = Decision(
        "manual",
        settings.model_name,
        "rolled_back",
        f"feedpulse model rollback: version {retired.version} retired",
        retired.version,
        served.version,
    )
    err.print(f"now serving version {served.version} (version {retired.version} retired)")
    print(json.dumps(dataclasses.asdict(decision)))
    if announce:
        _announce(settings, decision)


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


TaskDirs = Annotated[
    list[str] | None,
    typer.Option(
        "--task",
        help="TASK=DIR: train TASK (sentiment, topic) on DIR/{train,val,test}.jsonl of "
        "{text, label} rows; repeatable [default: TweetEval and AG News under FEEDPULSE_DATA_DIR]",
    ),
]


@app.command()
def train(
    mode: Annotated[
        str, typer.Option(help="finetune (encoder and heads) or heads (frozen encoder, fast)")
    ] = "finetune",
    task: TaskDirs = None,
    from_version: Annotated[
        str | None,
        typer.Option(help="Incremental: start from this exported version (a number or latest)"),
    ] = None,
    replay: Annotated[
        list[str] | None,
        typer.Option(help="TASK=DIR: old-domain data mixed in against forgetting; repeatable"),
    ] = None,
    replay_rows: Annotated[int, typer.Option(min=0, help="Replay rows in all")] = 4000,
    seed_data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Fit heads only, on a multi-task JSONL (text, sentiment, topic) like the seed set",
        ),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Hugging Face checkpoint directory or hub id")
    ] = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the data")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Encoder learning rate")] = None,
    eval_every: Annotated[int | None, typer.Option(min=1, help="Validate every N steps")] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N validations without improvement")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16 or fp32")] = None,
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

    settings = _settings(base_model=base_model, model_repository=model_repository)
    if mode not in ("finetune", "heads"):
        raise typer.BadParameter(f"--mode must be finetune or heads, not {mode!r}")
    if precision not in (None, "auto", "bf16", "fp32"):
        raise typer.BadParameter(f"--precision must be auto, bf16 or fp32, not {precision!r}")
    if seed_data is not None:
        report = train_seed_heads(settings, data=seed_data, console=err)
        print(json.dumps(report), flush=True)
        return
    defaults = INCREMENTAL if from_version else FineTuneConfig()
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "lr": lr,
        "eval_every": eval_every,
        "patience": patience,
        "precision": precision,
        "seed": seed,
    }
    config = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    try:
        report = run_training(
            settings,
            mode="heads" if mode == "heads" else "finetune",
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


triton_app = typer.Typer(help="The local Triton Inference Server.", no_args_is_help=True)
app.add_typer(triton_app, name="triton")


@triton_app.command("serve")
def triton_serve(
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port")] = None,
    bind_host: Annotated[
        str | None,
        typer.Option(help="Address HTTP, gRPC and metrics bind to [FEEDPULSE_TRITON_BIND_HOST]"),
    ] = None,
) -> None:
    """Serve the model repository with the bundled tritonserver until SIGTERM/SIGINT."""
    from serving.triton.server import TritonError
    from streams.classify.backend import local_triton

    settings = _settings(
        model_repository=model_repository,
        triton_grpc_port=grpc_port,
        triton_http_port=http_port,
        triton_metrics_port=metrics_port,
        triton_bind_host=bind_host,
    )

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    server = local_triton(settings)
    try:
        with err.status("starting tritonserver and loading the model"):
            server.start()
        err.print(
            f"Triton ready on {settings.triton_bind_host}: gRPC {server.grpc_url}, "
            f"HTTP {settings.triton_http_port}, "
            f"metrics {settings.triton_metrics_port}; Ctrl-C stops it"
        )
        while server.alive():
            time.sleep(1)
        err.print("[red]tritonserver exited[/]")
        raise typer.Exit(1)
    except TritonError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@triton_app.command("build-plan")
def triton_build_plan(
    model_repository: Annotated[
        Path | None, typer.Option(help="Model repository directory")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Model version (default newest)")] = None,
    max_seq: Annotated[int, typer.Option(help="Longest sequence the engine accepts")] = 128,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts")] = 64,
) -> None:
    """Build a TensorRT FP16 engine (model.plan) for a version: GPU machines only."""
    from serving.model_store import load_version
    from serving.triton.tensorrt import ShapeProfile, TensorRTUnavailableError, build_plan

    settings = _settings(model_repository=model_repository, model_version=version)
    model = load_version(settings.model_repository, settings.model_name, settings.model_version)
    profile = ShapeProfile(max_batch=max_batch, max_seq=max_seq, opt_seq=min(64, max_seq))
    try:
        plan = build_plan(model.path, profile)
    except TensorRTUnavailableError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    err.print(f"built {plan}; serve it with deploy/triton/tensorrt_fp16/ configs")
