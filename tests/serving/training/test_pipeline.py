"""Train, export, evaluate, document: reports and model card beside the version; incremental
runs start from an exported version's own weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.backends.onnx import create_session
from serving.model_store import MODEL_CARD, REPORTS_DIR, list_versions
from serving.multihead import load_version_model
from serving.tasks import DEFAULT_TASKS
from serving.training.data import TaskData, load_task_dir
from serving.training.finetune import FineTuneConfig
from serving.training.pipeline import TrainPlan, cap_fast_path, train_version
from tests.conftest import SHARED_DATA

SENTIMENT, TOPIC = DEFAULT_TASKS
REPORT_FIELDS = {
    "accuracy",
    "macro_recall",
    "macro_f1",
    "macro_precision",
    "per_class",
    "confusion",
}


def tiny(folder: str, task_index: int, rows: int = 48) -> TaskData:
    return load_task_dir(SHARED_DATA / folder, DEFAULT_TASKS[task_index], limit=rows, seed=3)


def test_fast_path_then_incremental_fine_tune(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    tweets, news = tiny("tweeteval_sentiment", 0), tiny("ag_news", 1)
    first, summary = train_version(
        TrainPlan(sets=[tweets, news], mode="heads", serve_max_length=64),
        repository=repo,
        name="clf",
    )
    assert first.version == 1 and summary["training"]["mode"] == "heads"
    for variant in ("fp32", "int8"):
        for name in ("tweeteval_sentiment", "ag_news"):
            report = json.loads((first.path / REPORTS_DIR / f"{name}_{variant}.json").read_text())
            assert report.keys() >= REPORT_FIELDS and report["rows"] == len(
                tweets.test if name.startswith("tweet") else news.test
            )
            assert (first.path / REPORTS_DIR / f"{name}_{variant}_confusion.png").stat().st_size > 0
    assert set(first.manifest["evaluation"]["test"]) == {
        "tweeteval_sentiment/fp32",
        "tweeteval_sentiment/int8",
        "ag_news/fp32",
        "ag_news/int8",
    }

    # The version's PyTorch weights reproduce its exported graph.
    model, tokenizer = load_version_model(first)
    enc = tokenizer(
        ["Stocks rally as rates hold", "awful service again"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch_logits = model(enc["input_ids"], enc["attention_mask"])[0].numpy()
    session = create_session(str(first.onnx_path("fp32")))
    onnx_logits = session.run(
        ["sentiment_logits"],
        {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()},
    )[0]
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)

    finance = tiny("financial_phrasebank", 0, rows=64)
    second, summary = train_version(
        TrainPlan(
            sets=[finance],
            base_version=first,
            replay=[tweets],
            config=FineTuneConfig(epochs=1, batch_size=16, max_length=48, eval_every=4),
            serve_max_length=64,
            variants=("fp32",),
            reason="new domain",
        ),
        repository=repo,
        name="clf",
    )
    assert list_versions(repo, "clf") == [1, 2]
    training = second.manifest["training"]
    assert training["started_from"] == "clf/1" and training["reason"] == "new domain"
    assert [d["role"] for d in training["data"][:2]] == ["train", "replay"]
    assert training["result"]["steps"] == 7  # (64 + 48) rows / 16
    evaluation = second.manifest["evaluation"]
    assert evaluation["baseline_version"] == 1
    assert (
        set(evaluation["baseline"])
        == set(evaluation["test"])
        == {
            "financial_phrasebank/fp32",
            "tweeteval_sentiment/fp32",
        }
    )
    card = (second.path / MODEL_CARD).read_text()
    assert "version 2" in card and "Started from: `clf/1`" in card
    assert f"{evaluation['test']['financial_phrasebank/fp32']['accuracy']:.4f}" in card
    assert "before (v1)" in card


def test_an_empty_plan_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one data set"):
        train_version(TrainPlan(sets=[], mode="heads"), repository=tmp_path, name="clf")
    assert list_versions(tmp_path, "clf") == []


def test_the_fast_path_samples_each_set_down_and_fine_tuning_does_not() -> None:
    tweets, news = tiny("tweeteval_sentiment", 0, rows=60), tiny("ag_news", 1, rows=30)
    plan = TrainPlan(sets=[tweets, news], mode="heads", heads_max_rows=40)
    capped = cap_fast_path(plan)
    assert [len(d.train) for d in capped.sets] == [40, 30]
    assert {r.text for r in capped.sets[0].train} <= {r.text for r in tweets.train}
    assert capped.sets[0].val == tweets.val and capped.sets[0].test == tweets.test
    assert cap_fast_path(plan).sets[0].train == capped.sets[0].train  # seeded
    assert (
        cap_fast_path(TrainPlan(sets=[tweets], mode="finetune", heads_max_rows=40)).sets[0]
        is tweets
    )
