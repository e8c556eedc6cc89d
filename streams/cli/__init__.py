"""The `feedpulse` command line: `app`, registering the commands of the modules beside it.
Nothing in feedpulse imports `streams.cli`; only the `feedpulse` script and `python -m streams`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from streams.cli import alerts, feeds, learning, model, pipeline, train, triton
from streams.cli.errors import one_line_errors

app = typer.Typer(
    help="Streaming classification of news and social feeds: Kafka in, labels out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register(group: typer.Typer, name: str, command: Callable[..., Any]) -> None:
    prefix = "" if group is app else f"{group.info.name} "
    group.command(name)(one_line_errors(prefix + name, command))


# Registered here, all in one place: the order below is the order `feedpulse --help` lists.
_register(app, "demo", pipeline.demo)
_register(app, "broker", pipeline.broker)
_register(app, "worker", pipeline.worker)
_register(app, "publish", feeds.publish_feed)
_register(app, "tail", feeds.tail)
_register(app, "alerts", alerts.alerts)
_register(app, "watch", learning.watch)
_register(app, "trainer", learning.trainer)
_register(app, "train", train.train)

model_app = typer.Typer(
    name="model", help="Model versions: list, promote, roll back, clean.", no_args_is_help=True
)
_register(model_app, "list", model.list_versions)
_register(model_app, "promote", model.promote)
_register(model_app, "rollback", model.rollback)
_register(model_app, "clean", model.clean)
app.add_typer(model_app, name="model")

triton_app = typer.Typer(
    name="triton", help="The local Triton Inference Server.", no_args_is_help=True
)
_register(triton_app, "serve", triton.serve)
_register(triton_app, "build-plan", triton.build_tensorrt_plan)
app.add_typer(triton_app, name="triton")
