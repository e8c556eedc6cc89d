"""`alerts`: the faust worker that turns sentiment spikes on the labeled topic into alerts."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from streams.cli.common import Bootstrap, MetricsPort, Verbose, err, settings_or_exit, setup_logging


def alerts(
    bootstrap_servers: Bootstrap = None,
    window_s: Annotated[float | None, typer.Option(help="Tumbling window length, seconds")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Deviations above baseline that fire an alert")
    ] = None,
    min_volume: Annotated[
        int | None, typer.Option(help="Items a window needs before it can alert")
    ] = None,
    metrics_port: MetricsPort = None,
    verbose: Verbose = False,
) -> None:
    """Run an alert worker (faust): sentiment spikes per key from the labeled topic."""
    import faust
    from prometheus_client import CollectorRegistry

    from streams.alerts.app import build_alert_app
    from streams.health import Readiness, serve_health
    from streams.kafka.topics import ensure_topics

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers,
        alert_window_s=window_s,
        alert_threshold=threshold,
        alert_min_volume=min_volume,
        alert_metrics_port=metrics_port,
    )
    setup_logging(verbose)
    for noisy in ("faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    asyncio.run(ensure_topics(settings, [settings.output_topic, settings.alerts_topic]))
    registry = CollectorRegistry()
    readiness = Readiness()
    serve_health(registry, readiness, settings.metrics_host, settings.alert_metrics_port)
    app_ = build_alert_app(settings, registry)
    # Ready once faust runs and no rebalance (table recovery included) is under way.
    readiness.add("started", lambda: bool(app_.started) and not app_.rebalancing)
    err.print(
        f"alert worker: {settings.output_topic} -> {settings.alerts_topic}, "
        f"{settings.alert_window_s:g} s windows"
    )
    faust.Worker(
        app_, loglevel="DEBUG" if verbose else "WARNING", quiet=True
    ).execute_from_commandline()
