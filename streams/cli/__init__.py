"""The `feedpulse` command line: `app`, registering the commands of the modules beside it.
Nothing in feedpulse imports `streams.cli`; only the `feedpulse` script and `python -m streams`."""

from __future__ import annotations

import typer

from streams.cli import alerts, feeds, learning, model, pipeline, train, triton

app = typer.Typer(
    help="Streaming classification of news and social feeds: Kafka in, labels out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registered here, all in one place: the order below is the order `feedpulse --help` lists.
app.command("demo")(pipeline.demo)
app.command("broker")(pipeline.broker)
app.command("worker")(pipeline.worker)
app.command("publish")(feeds.publish_feed)
app.command("tail")(feeds.tail)
app.command("alerts")(alerts.alerts)
app.command("watch")(learning.watch)
app.command("trainer")(learning.trainer)
app.command("train")(train.train)

model_app = typer.Typer(help="Model versions: list, promote, roll back.", no_args_is_help=True)
model_app.command("list")(model.list_versions)
model_app.command("promote")(model.promote)
model_app.command("rollback")(model.rollback)
app.add_typer(model_app, name="model")

triton_app = typer.Typer(help="The local Triton Inference Server.", no_args_is_help=True)
triton_app.command("serve")(triton.serve)
triton_app.command("build-plan")(triton.build_tensorrt_plan)
app.add_typer(triton_app, name="triton")
