"""Wiring: build the collaborators from the settings and run a worker until signalled."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from serving.contract import Classifier
from serving.model_store import load_version
from serving.onnx_backend import OnnxClassifier
from streams.metrics import WorkerMetrics, serve_metrics
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
        python_env=settings.triton_python_env,
        log_path=log_path,
    )


def open_classifier(settings: Settings) -> Classifier:
    """The inference backend the settings ask for (the in-process ONNX model by default).

    The Triton backend still reads the tokenizer and task labels from the local model
    repository; Triton itself may serve a newer version, which outputs are stamped with.
    """
    model = load_version(settings.model_repository, settings.model_name, settings.model_version)
    if settings.backend == "triton":
        from serving.triton_backend import TritonClassifier

        return TritonClassifier(
            settings.triton_url,
            model,
            timeout_s=settings.triton_timeout_s,
            chunk_size=settings.inference_chunk,
            ssl=settings.triton_ssl,
            root_certificates=settings.triton_root_certificates,
        )
    return OnnxClassifier(
        model,
        variant=settings.model_variant,
        threads=settings.inference_threads,
        chunk_size=settings.inference_chunk,
    )


async def run_worker(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run one classify worker until SIGTERM/SIGINT, then finish the batch, commit and leave."""
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    port = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    if port:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    classifier = open_classifier(settings)
    info = classifier.info
    log.info("serving %s version %s (%s)", info.name, info.version, info.variant)
    worker = ClassifyWorker(settings, classifier, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await classifier.close()
