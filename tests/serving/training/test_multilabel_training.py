"""Multi-label heads through every training path: an incremental fine-tune adds an emotion
head to a version that lacked it, trains it beside the old heads in one forward pass, and
exports it with its thresholds and reports."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from serving.model_store import MODEL_CARD, REPORTS_DIR
from serving.multihead import MultiHeadModel
from serving.tasks import DEFAULT_TASKS, TaskHead
from serving.training.data import load_task_dir
from serving.training.declaration import default_declaration, load_declared, with_data
from serving.training.finetune import FineTuneConfig
from serving.training.pipeline import TrainPlan, train_version
from tests.conftest import SHARED_DATA

SENTIMENT = DEFAULT_TASKS[0]


class TinyEncoder(nn.Module):  # type: ignore[misc]
    """Just enough of an encoder for the head bookkeeping: a config with a width."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"hidden_size": 8})()


def test_declare_adds_new_heads_replaces_changed_ones_and_keeps_the_rest() -> None:
    model = MultiHeadModel(TinyEncoder(), DEFAULT_TASKS)
    kept = model.heads["sentiment"].weight.detach().clone()
    emotion = TaskHead("emotion", ("anger", "joy"), "multilabel")
    topic = TaskHead("topic", ("World", "Sports"))  # fewer labels: a new head
    assert model.declare([SENTIMENT, emotion, topic]) == ["emotion", "topic"]
    assert [t.name for t in model.tasks] == ["sentiment", "topic", "emotion"]
    assert model.heads["topic"].out_features == 2 and model.heads["emotion"].out_features == 2
    assert torch.equal(model.heads["sentiment"].weight, kept)


def test_incremental_fine_tune_adds_a_multilabel_head(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    tweets = load_task_dir(SHARED_DATA / "tweeteval_sentiment", SENTIMENT, limit=48, seed=3)
    first, _ = train_version(
        TrainPlan(sets=[tweets], mode="heads", serve_max_length=64, variants=("fp32",)),
        repository=repo,
        name="clf",
    )
    assert [t.name for t in first.tasks] == ["sentiment"]
    (emotion,) = load_declared(
        with_data(default_declaration(SHARED_DATA), {"emotion": SHARED_DATA / "goemotions_ekman"}),
        limit=64,
        seed=3,
    )
    second, summary = train_version(
        TrainPlan(
            sets=[emotion],
            replay=[tweets],
            base_version=first,
            config=FineTuneConfig(max_steps=6, batch_size=16, eval_every=3),
            serve_max_length=64,
            variants=("fp32",),
        ),
        repository=repo,
        name="clf",
    )
    heads = {t.name: t for t in second.tasks}
    assert list(heads) == ["sentiment", "emotion"]
    assert heads["emotion"].kind == "multilabel"
    assert len(heads["emotion"].thresholds) == 7
    calibration = summary["training"]["calibration"]["emotion"]
    assert calibration["thresholds"] == list(heads["emotion"].thresholds)
    assert len(calibration["temperature"]) == 7 and calibration["val_ece_after"] >= 0
    report = json.loads((second.path / REPORTS_DIR / "goemotions_ekman_fp32.json").read_text())
    assert report["kind"] == "multilabel" and 0 <= report["macro_f1"] <= 1
    assert "micro_f1" in report and "confusion" not in report
    assert "multi-label" in (second.path / MODEL_CARD).read_text()
    # The validation history judged the multi-label set by macro-F1.
    history = summary["training"]["result"]["history"]
    assert history and "goemotions_ekman" in history[-1]["val"]
