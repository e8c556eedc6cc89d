"""`feedpulse train` as users run it: a quick real run, progress in the log, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.classify.processes import worker_env
from streams.settings import Settings
from tests.conftest import SHARED_DATA


def train_cli(tmp_path: Path, *args: str, **settings: object) -> subprocess.CompletedProcess[str]:
    values: dict[str, object] = {
        "model_repository": tmp_path / "models",
        "checkpoint_dir": tmp_path / "checkpoints",
        "data_dir": SHARED_DATA,
    }
    values.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "streams", "train", *args],
        env=worker_env(Settings(**values)),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_fine_tune_exports_a_reported_version(tmp_path: Path) -> None:
    done = train_cli(tmp_path, "--limit", "24", "--max-steps", "2", "--eval-every", "1")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1
    assert set(summary["test"]) == {
        "tweeteval_sentiment/fp32",
        "tweeteval_sentiment/int8",
        "ag_news/fp32",
        "ag_news/int8",
    }
    assert summary["training"]["result"]["steps"] == 2
    # Off a terminal, progress arrives as plain lines with the running loss and speed.
    assert "fine-tuning: 2/2" in done.stderr and "loss" in done.stderr and "rows/s" in done.stderr
    version_dir = Path(summary["path"])
    assert (version_dir / "MODEL_CARD.md").is_file()
    assert (tmp_path / "checkpoints" / "feedpulse_classifier" / "fresh" / "last.pt").is_file()


def test_unknown_task_and_missing_data_are_clear_errors(tmp_path: Path) -> None:
    bad_task = train_cli(tmp_path, "--task", f"Emotion Tags={SHARED_DATA / 'ag_news'}")
    assert bad_task.returncode == 2
    assert "task name 'Emotion Tags': use lower-case letters" in bad_task.stderr
    one_label = tmp_path / "one-label"
    one_label.mkdir()
    (one_label / "train.jsonl").write_text('{"text": "a", "label": "spam"}\n' * 3)
    single = train_cli(tmp_path, "--task", f"spam={one_label}")
    assert single.returncode == 2
    assert "one label" in single.stderr
    missing = train_cli(tmp_path, data_dir=tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "nowhere/tweeteval_sentiment is not a directory" in missing.stderr
    no_version = train_cli(tmp_path, "--from-version", "7")
    assert no_version.returncode == 2
    assert "no model versions" in no_version.stderr


def test_adapter_setting_reaches_the_trainers_fine_tune(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.learning.training import trainer_config

    monkeypatch.setenv("FEEDPULSE_FINETUNE_ADAPTER", "lora")
    config = trainer_config(Settings(data_dir=SHARED_DATA, finetune_replay_rows=10))
    assert config.finetune.adapter == "lora"
    assert config.finetune.epochs == Settings().finetune_epochs
    monkeypatch.setenv("FEEDPULSE_FINETUNE_ADAPTER", "dora")
    with pytest.raises(ValueError, match="finetune_adapter"):
        Settings()
