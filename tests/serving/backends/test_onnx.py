"""The in-process ONNX backend honours the classifier contract and gives meaningful labels."""

from __future__ import annotations

import pytest

from serving.backends.contract import Classifier
from serving.backends.onnx import OnnxClassifier
from serving.model_store import ModelNotFoundError, load_version
from tests.conftest import BuiltModel


@pytest.fixture
def classifier(built_model: BuiltModel) -> OnnxClassifier:
    return OnnxClassifier(built_model.version, variant="int8")


async def test_contract_one_prediction_per_text_in_order(classifier: OnnxClassifier) -> None:
    assert isinstance(classifier, Classifier)
    texts = [
        "Storm floods coastal towns",
        "Goalkeeper saves penalty in the final",
        "Chipmaker profits soar",
    ]
    preds = await classifier.classify(texts)
    assert len(preds) == 3
    for pred in preds:
        assert set(pred.tasks) == {"sentiment", "topic"}
        topic = pred.tasks["topic"]
        assert topic.label in topic.scores and topic.score == max(topic.scores.values())
        assert abs(sum(topic.scores.values()) - 1) < 1e-3
        assert pred.embedding is not None and pred.embedding.shape == (384,)
    assert await classifier.classify([]) == []
    await classifier.close()


async def test_texts_over_the_window_are_truncated_and_flagged(classifier: OnnxClassifier) -> None:
    preds = await classifier.classify(["word " * 300, "a short headline"])
    assert [p.truncated for p in preds] == [True, False]
    await classifier.close()


async def test_default_heads_give_meaningful_labels(classifier: OnnxClassifier) -> None:
    cases = {
        "Champions clinch the league title with a stoppage-time winner": "Sports",
        "Stocks slump as the central bank signals more rate hikes": "Business",
        "Researchers unveil a faster quantum processor and new AI chip": "Sci/Tech",
        "Foreign ministers meet to negotiate a ceasefire in the border conflict": "World",
    }
    preds = await classifier.classify(list(cases))
    assert [p.tasks["topic"].label for p in preds] == list(cases.values())
    sentiment = await classifier.classify(
        [
            "Devastating floods kill dozens and leave thousands homeless",
            "Thrilled and grateful: we won!",
        ]
    )
    assert [p.tasks["sentiment"].label for p in sentiment] == ["negative", "positive"]
    await classifier.close()


def test_heldout_accuracy_is_reported_and_useful(built_model: BuiltModel) -> None:
    report = built_model.report
    assert report["heldout_rows"] > 0
    assert report["topic"]["heldout_accuracy"] >= 0.8
    assert report["sentiment"]["heldout_accuracy"] >= 0.6


def test_seed_heads_are_calibrated_on_the_held_out_rows(built_model: BuiltModel) -> None:
    """Temperature scaling never makes the held-out calibration error worse than it was
    (it minimises the held-out NLL; ECE follows on these sets)."""
    for task in ("sentiment", "topic"):
        c = built_model.report[task]["calibration"]
        assert c["temperature"] > 0 and c["val_rows"] == built_model.report[task]["heldout_rows"]
        assert c["val_ece_after"] <= c["val_ece_before"] + 0.02


def test_missing_model_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelNotFoundError, match="feedpulse train"):
        load_version(tmp_path, "feedpulse_classifier")
