"""Commands stop with one line that says why, never with a bare "Aborted." or a traceback."""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
import typer
from rich.text import Text

from streams.cli.common import err

F = TypeVar("F", bound=Callable[..., Any])
# Full tracebacks for bug reports: FEEDPULSE_DEBUG=1.
DEBUG_ENV = "FEEDPULSE_DEBUG"
MAX_MESSAGE_CHARS = 500


def describe(exc: BaseException) -> str:
    """The cause in one line: type, message and the error behind it, bounded."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 3:
        seen.add(id(current))
        message = " ".join(str(current).split())
        name = type(current).__name__
        # aiokafka repeats the class name in its messages ("KafkaConnectionError: ...").
        parts.append(message if message.startswith(name) else f"{name}: {message}".rstrip(": "))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    line = "; caused by ".join(parts)
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def one_line_errors(name: str, command: F) -> F:
    """Wrap a command: an unexpected exception prints `feedpulse NAME stopped: cause`, exit 1.

    Click turns an escaping EOFError (a truncated gzip stream, say) into a bare "Aborted.",
    and any other exception into a traceback: neither tells an operator what to fix.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        # typer bundles its own click: its BadParameter is no click.ClickException, yet
        # typer prints it as a usage error (exit 2), as it does an option callback's.
        except (
            typer.Exit,
            typer.Abort,
            typer.BadParameter,
            click.exceptions.Exit,
            click.ClickException,
        ):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                err.print(Text(traceback.format_exc().rstrip()))
            err.print(Text(f"feedpulse {name} stopped: {describe(exc)}", style="red"))
            raise typer.Exit(1) from exc

    return run  # type: ignore[return-value]
