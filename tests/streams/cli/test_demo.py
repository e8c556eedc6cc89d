"""`feedpulse demo` end to end, as a user runs it: its summary accounts for every message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, BuiltModel

pytestmark = pytest.mark.integration


def run_demo(repository: Path, *args: str) -> dict[str, Any]:
    """Run `feedpulse demo ARGS` on `repository`; stdout must hold only the summary line."""
    env = dict(
        os.environ,
        FEEDPULSE_MODEL_REPOSITORY=str(repository),
        FEEDPULSE_TRITON_PYTHON_ENV=str(REPO_ROOT / ".venv" / "triton-env"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout holds only the summary line"
    summary: dict[str, Any] = json.loads(lines[0])
    return summary


def test_demo_prints_a_summary_with_nothing_lost(built_model: BuiltModel) -> None:
    summary = run_demo(built_model.repository, "--count", "120", "--workers", "2")
    assert summary["published"] == 120
    assert summary["lost"] == 0
    assert summary["dead_lettered"] == 3  # one bad input in every 40
    assert summary["labeled"] == 117
    assert summary["throughput_msgs_per_s"] > 0
    assert 0 <= summary["latency_ms_p50"] <= summary["latency_ms_p99"]
    assert summary["model"] == "feedpulse_classifier/1 (int8)"


def test_demo_through_triton_accounts_for_everything(triton_repository: Path) -> None:
    summary = run_demo(triton_repository, "--count", "80", "--backend", "triton")
    assert (summary["published"], summary["lost"], summary["dead_lettered"]) == (80, 0, 2)
    assert summary["model"] == "feedpulse_classifier/1 (triton)"
