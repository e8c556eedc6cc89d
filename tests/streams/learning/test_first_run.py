"""A machine's first model: fast-path heads on the declared data, seed heads without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from serving.training.sources import SourceError
from streams.learning.training import first_run_model
from streams.settings import Settings


def test_without_the_default_data_the_seed_heads_are_fitted(tmp_path: Path) -> None:
    settings = Settings(model_repository=tmp_path / "models", data_dir=tmp_path / "no-data")
    console = Console(stderr=True, record=True)
    summary = first_run_model(settings, console)
    assert summary["version"] == 1
    assert "default data is not here" in console.export_text()


def test_a_declaration_whose_data_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[[task]]\nname = "emotion"\ndata = "nowhere"\n')
    settings = Settings(model_repository=tmp_path / "models", tasks_file=tasks)
    with pytest.raises(SourceError, match=r"declared data is missing.*nowhere"):
        first_run_model(settings, Console(stderr=True))
    assert not (tmp_path / "models").exists()
