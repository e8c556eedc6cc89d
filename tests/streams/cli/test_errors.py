"""Commands that stop say why in one line: no bare "Aborted.", no traceback."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streams.cli.errors import describe, one_line_errors


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    def boom() -> None:
        raise exc

    app.command("boom")(one_line_errors("boom", boom))
    app.command("other")(lambda: None)
    return app


def test_an_escaping_eof_error_is_one_line_not_aborted() -> None:
    # What a truncated gzip payload raises, and what click reports as a bare "Aborted.".
    try:
        gzip.decompress(gzip.compress(b"x" * 1000)[:-8])
    except EOFError as exc:
        eof = exc
    result = CliRunner().invoke(_app_raising(eof), ["boom"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [f"feedpulse boom stopped: EOFError: {eof}"]
    assert "Aborted" not in result.output


def test_the_cause_behind_an_error_is_named() -> None:
    try:
        try:
            raise KeyError("rows_gzip_b64")
        except KeyError as inner:
            raise ValueError("not a fine-tuning job") from inner
    except ValueError as exc:
        line = describe(exc)
    assert line == "ValueError: not a fine-tuning job; caused by KeyError: 'rows_gzip_b64'"


def test_messages_are_bounded_and_on_one_line() -> None:
    line = describe(RuntimeError("first\nsecond " + "x" * 2000))
    assert "\n" not in line
    assert len(line) <= 500
    assert line.startswith("RuntimeError: first second x")


def test_exit_and_interrupt_keep_their_meaning() -> None:
    assert CliRunner().invoke(_app_raising(typer.Exit(3)), ["boom"]).exit_code == 3
    result = CliRunner().invoke(_app_raising(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == 130
    assert "Aborted" not in result.output


@pytest.mark.parametrize(
    ("args", "last_line"),
    [
        (
            ["triton", "build-plan", "--model-repository", "{empty}"],
            "feedpulse triton build-plan stopped: ModelNotFoundError: no model versions of",
        ),
        (
            ["model", "promote", "1", "--model-repository", "{empty}"],
            "'feedpulse_classifier' has no candidate or retired version 1",
        ),
        (
            ["trainer", "--bootstrap-servers", "127.0.0.1:1"],
            "feedpulse trainer stopped: KafkaConnectionError: Unable to bootstrap from",
        ),
    ],
)
def test_real_commands_stop_with_one_line(args: list[str], last_line: str, tmp_path: Path) -> None:
    argv = [a.replace("{empty}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "streams", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "FEEDPULSE_MODEL_REPOSITORY": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Aborted" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(last_line)


def test_a_bad_option_value_found_in_the_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(_app_raising(typer.BadParameter("--mode must be x or y")), ["boom"])
    assert result.exit_code == 2
    assert "--mode must be x or y" in result.output
    assert "stopped" not in result.output
