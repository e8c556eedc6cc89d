"""The `model` group: list the versions in the repository, promote one, roll back, clean."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated, Any

import typer

from streams.cli.common import ModelRepository, err, settings_or_exit
from streams.settings import Settings

Announce = Annotated[bool, typer.Option(help="Also publish the change on the decisions topic")]


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


def list_versions(model_repository: ModelRepository = None) -> None:
    """Served, candidate and retired versions, with their test figures (JSON lines)."""
    from serving.model_store import version_states

    settings = settings_or_exit(model_repository=model_repository)
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


def promote(
    version: Annotated[int, typer.Argument(help="Candidate or retired version to serve")],
    model_repository: ModelRepository = None,
    announce: Announce = True,
) -> None:
    """Serve a candidate (or re-serve a retired version newer than the served one)."""
    from online.jobs import Decision
    from serving.model_store import ModelNotFoundError, promote_version, serving_version

    settings = settings_or_exit(model_repository=model_repository)
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


def rollback(model_repository: ModelRepository = None, announce: Announce = True) -> None:
    """Return to the previous version: the served one moves aside (it can be re-promoted)."""
    from online.jobs import Decision
    from serving.model_store import ModelNotFoundError, retire_newest

    settings = settings_or_exit(model_repository=model_repository)
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


def clean(
    model_repository: ModelRepository = None,
    keep_rejected: Annotated[
        int | None,
        typer.Option(
            min=0, help="Rejected candidates to keep (default: the trainer_keep_rejected setting)"
        ),
    ] = None,
) -> None:
    """Remove leftover staging directories and all but the newest rejected candidates
    (never a served or retired version); one JSON line per removed directory."""
    from serving.model_store import clean_repository

    settings = settings_or_exit(model_repository=model_repository)
    keep = settings.trainer_keep_rejected if keep_rejected is None else keep_rejected
    removed = clean_repository(settings.model_repository, settings.model_name, keep)
    for item in removed:
        print(json.dumps({"removed": str(item.path), "kind": item.kind, "bytes": item.size_bytes}))
    err.print(f"removed {len(removed)} director{'y' if len(removed) == 1 else 'ies'}")
