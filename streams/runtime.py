"""Wiring: build the collaborators from the settings and run a worker until signalled."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from prometheus_client import CollectorRegistry

from streams.classify.backend import open_classifier
from streams.classify.worker import ClassifyWorker
from streams.health import Readiness, serve_health
from streams.metrics import WatchMetrics, WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)


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
    settings: Settings,
    port: int,
    registry: CollectorRegistry | None,
    readiness: Readiness | None = None,
) -> CollectorRegistry:
    registry = registry or CollectorRegistry()
    if serve_health(registry, readiness or Readiness(), settings.metrics_host, port):
        log.info(
            "metrics on http://%s:%d/metrics, readiness on /ready", settings.metrics_host, port
        )
    return registry


async def run_worker(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run one classify worker until SIGTERM/SIGINT, then finish the batch, commit and leave."""
    readiness = Readiness()
    metrics = WorkerMetrics(_metrics(settings, settings.metrics_port, registry, readiness))
    classifier = open_classifier(settings)
    info = classifier.info
    log.info("serving %s version %s (%s)", info.name, info.version, info.variant)
    try:
        await run_until_signalled(ClassifyWorker(settings, classifier, metrics, readiness))
    finally:
        await classifier.close()


async def run_watch(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run the model watch until SIGTERM/SIGINT."""
    from online.model_watch import ModelWatch
    from streams.learning.watch_worker import WatchWorker, watch_config, watched_tasks

    readiness = Readiness()
    metrics = WatchMetrics(_metrics(settings, settings.watch_metrics_port, registry, readiness))
    watch = ModelWatch(watch_config(settings, watched_tasks(settings)))
    await run_until_signalled(WatchWorker(settings, watch, metrics, readiness))


async def run_trainer(settings: Settings) -> None:
    """Run the fine-tuning trainer until SIGTERM/SIGINT."""
    from streams.learning.trainer_worker import TrainerWorker
    from streams.learning.training import trainer_config

    await run_until_signalled(TrainerWorker(settings, lambda: trainer_config(settings)))
