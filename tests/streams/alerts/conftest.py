"""Alert tests keep faust's data folder in their temporary directory, not the repo root."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def faust_datadir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """faust reads APP_DATADIR before its `datadir` argument; workers inherit the variable."""
    datadir = tmp_path / "faust-data"
    monkeypatch.setenv("APP_DATADIR", str(datadir))
    return datadir
