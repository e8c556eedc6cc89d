"""`feedpulse demo` end to end, as a user runs it: its summary accounts for every message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import BuiltModel

pytestmark = pytest.mark.integration


def test_demo_prints_a_summary_with_nothing_lost(built_model: BuiltModel) -> None:
    env = dict(os.environ, FEEDPULSE_MODEL_REPOSITORY=str(built_model.repository))
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--count", "120", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout holds only the summary line"
    summary = json.loads(lines[0])
    assert summary["published"] == 120
    assert summary["lost"] == 0
    assert summary["dead_lettered"] == 3  # one bad input in every 40
    assert summary["labeled"] == 117
    assert summary["throughput_msgs_per_s"] > 0
    assert 0 <= summary["latency_ms_p50"] <= summary["latency_ms_p99"]
    assert summary["model"] == "feedpulse_classifier/1 (int8)"
