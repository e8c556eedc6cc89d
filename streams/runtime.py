"""Wiring: build the collaborators from the settings and run a worker until signalled."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry

from serving.contract import Classifier
from serving.hot_swap import FollowingClassifier
from serving.model_store import load_version, serving_version
from serving.onnx_backend import OnnxClassifier
from streams.metrics import WatchMetrics, WorkerMetrics, serve_metrics
from streams.settings import Settings
from streams.worker import ClassifyWorker

if TYPE_CHECKING:
    from serving.triton_server import TritonServer

log = logging.getLogger(__name__)


def local_triton(settings: Settings, log_path: Path | None = None) -> TritonServer:
    """A local Triton server on the settings' model repository and ports (not started)."""
    from serving.triton_server import TritonServer

    return TritonServer(
        settings.model_repository,
        http_port=settings.triton_http_port,
        grpc_port=settings.triton_grpc_port,
        metrics_port=settings.triton_metrics_port,
        host=settings.triton_bind_host,
        python_env=settings.triton_python_env,
        log_path=log_path,
    )


def open_classifier(settings: Settings) -> Classifier:
    """The inference backend the settings ask for (the in-process ONNX model by default).

    Unless `model_version` pins one, it follows the served version: promotions and
    rollbacks take effect without a restart. The Triton backend reads the tokenizer and
    task labels from the local model repository; outputs are stamped with the version
    Triton reports it served.
    """
    if settings.model_version is not None:
        return open_version(settings, settings.model_version)
    repo, name = settings.model_repository, settings.model_name
    if serving_version(repo, name) is None:
        load_version(repo, name)  # raises the error that says what to run
    return FollowingClassifier(
        lambda version: open_version(settings, version),
        lambda: serving_version(repo, name),
        check_s=settings.model_watch_s,
    )


def open_version(settings: Settings, version: int) -> Classifier:
    """The backend for one version of the model."""
    model = load_version(settings.model_repository, settings.model_name, version)
    if settings.backend == "triton":
        from serving.triton_backend import TritonClassifier

        return TritonClassifier(
            settings.triton_url,
            model,
            timeout_s=settings.triton_timeout_s,
            chunk_size=settings.inference_chunk,
            ssl=settings.triton_ssl,
            root_certificates=settings.triton_root_certificates,
            private_key=settings.triton_private_key,
            certificate_chain=settings.triton_certificate_chain,
        )
    return OnnxClassifier(
        model,
        variant=settings.model_variant,
        threads=settings.inference_threads,
        chunk_size=settings.inference_chunk,
    )


class Stoppable(Protocol):
    """A worker that runs until asked to stop."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def run_until_signalled(worker: Stoppable) -> None:
    """Run `worker`; SIGTERM/SIGINT ask it to finish what it holds and stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _metrics(
    settings: Settings, port: int, registry: CollectorRegistry | None
) -> CollectorRegistry:
    registry = registry or CollectorRegistry()
    if serve_metrics(registry, settings.metrics_host, port):
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return registry


async def run_worker(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run one classify worker until SIGTERM/SIGINT, then finish the batch, commit and leave."""
    metrics = WorkerMetrics(_metrics(settings, settings.metrics_port, registry))
    classifier = open_classifier(settings)
    info = classifier.info
    log.info("serving %s version %s (%s)", info.name, info.version, info.variant)
    try:
        await run_until_signalled(ClassifyWorker(settings, classifier, metrics))
    finally:
        await classifier.close()


async def run_watch(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run the model watch until SIGTERM/SIGINT."""
    from online.watch import ModelWatch
    from streams.watch import WatchWorker, watch_config, watched_tasks

    metrics = WatchMetrics(_metrics(settings, settings.watch_metrics_port, registry))
    watch = ModelWatch(watch_config(settings, watched_tasks(settings)))
    await run_until_signalled(WatchWorker(settings, watch, metrics))


async def run_trainer(settings: Settings) -> None:
    """Run the fine-tuning trainer until SIGTERM/SIGINT."""
    from streams.trainer_worker import TrainerWorker
    from streams.training import trainer_config

    await run_until_signalled(TrainerWorker(settings, lambda: trainer_config(settings)))
