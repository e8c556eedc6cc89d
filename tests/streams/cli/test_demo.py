"""`feedpulse demo` end to end, as a user runs it: its summary accounts for every message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serving.model_store import load_version
from tests.conftest import REPO_ROOT, BuiltModel

pytestmark = pytest.mark.integration


def run_demo(
    repository: Path, *args: str, extra_env: dict[str, Path] | None = None
) -> dict[str, Any]:
    """Run `feedpulse demo ARGS` on `repository`; stdout must hold only the summary line."""
    env = dict(
        os.environ,
        FEEDPULSE_MODEL_REPOSITORY=str(repository),
        FEEDPULSE_TRITON_PYTHON_ENV=str(REPO_ROOT / ".venv" / "triton-env"),
        **{k: str(v) for k, v in (extra_env or {}).items()},
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
    assert summary["model_test"] == {}  # seed heads were never tested on held-out data


def test_demo_through_triton_accounts_for_everything(triton_repository: Path) -> None:
    summary = run_demo(triton_repository, "--count", "80", "--backend", "triton")
    assert (summary["published"], summary["lost"], summary["dead_lettered"]) == (80, 0, 2)
    assert summary["model"] == "feedpulse_classifier/1 (triton)"


def test_first_demo_fits_heads_on_the_default_data_and_shows_their_test_figures(
    tmp_path: Path, small_data_factory: Callable[..., Path]
) -> None:
    data = small_data_factory(rows=150)
    summary = run_demo(tmp_path / "models", "--count", "80", extra_env={"FEEDPULSE_DATA_DIR": data})
    assert (summary["published"], summary["lost"]) == (80, 0)
    assert summary["model"] == "feedpulse_classifier/1 (int8)"
    # The served variant was tested on each default set's test split, and nothing else.
    assert set(summary["model_test"]) == {"tweeteval_sentiment", "ag_news"}
    for figures in summary["model_test"].values():
        assert 0.0 <= figures["accuracy"] <= 1.0 and 0.0 <= figures["ece"] <= 1.0
    manifest = load_version(tmp_path / "models", "feedpulse_classifier").manifest
    assert manifest["training"]["mode"] == "heads"
    assert manifest["training"]["reason"].startswith("first run")
    assert set(manifest["evaluation"]["test"]) == {"tweeteval_sentiment/int8", "ag_news/int8"}
