"""The `triton` group: serve the model repository locally, build a TensorRT engine."""

from __future__ import annotations

import signal
import time
from typing import Annotated

import typer

from streams.cli.common import ModelRepository, err, settings_or_exit


def serve(
    model_repository: ModelRepository = None,
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

    settings = settings_or_exit(
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


def build_tensorrt_plan(
    model_repository: ModelRepository = None,
    version: Annotated[int | None, typer.Option(help="Model version (default newest)")] = None,
    max_seq: Annotated[int, typer.Option(help="Longest sequence the engine accepts")] = 128,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts")] = 64,
) -> None:
    """Build a TensorRT FP16 engine (model.plan) for a version: GPU machines only."""
    from serving.model_store import load_version
    from serving.triton.tensorrt import ShapeProfile, TensorRTUnavailableError, build_plan

    settings = settings_or_exit(model_repository=model_repository, model_version=version)
    model = load_version(settings.model_repository, settings.model_name, settings.model_version)
    profile = ShapeProfile(max_batch=max_batch, max_seq=max_seq, opt_seq=min(64, max_seq))
    try:
        plan = build_plan(model.path, profile)
    except TensorRTUnavailableError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    err.print(f"built {plan}; serve it with deploy/triton/tensorrt_fp16/ configs")
