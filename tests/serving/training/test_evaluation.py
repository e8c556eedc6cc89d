"""Classification reports: figures worked out by hand, files with the fields they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.training.evaluation import classification_report, format_report, write_report

LABELS = ("negative", "neutral", "positive")
GOLD = ["negative", "negative", "neutral", "neutral", "neutral", "positive"]
PRED = ["negative", "neutral", "neutral", "neutral", "positive", "negative"]


def test_report_matches_hand_computed_figures() -> None:
    report = classification_report(GOLD, PRED, LABELS)
    # negative: 1 of 2 found, 1 of 2 predictions right; neutral: 2/3 recall, 2/3 precision;
    # positive: 0 of 1 found, its one prediction wrong.
    assert report["per_class"]["negative"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
    }
    assert report["per_class"]["neutral"]["recall"] == pytest.approx(0.6667, abs=1e-4)
    assert report["per_class"]["positive"]["f1"] == 0.0
    assert report["accuracy"] == 0.5
    assert report["macro_recall"] == pytest.approx((0.5 + 2 / 3 + 0) / 3, abs=1e-4)
    assert report["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]


def test_absent_class_is_left_out_of_macro_averages() -> None:
    report = classification_report(["neutral", "neutral"], ["neutral", "negative"], LABELS)
    assert report["per_class"]["positive"]["support"] == 0
    assert report["macro_recall"] == 0.5  # neutral 0.5, negative has no rows of its own


def test_report_rejects_unknown_labels_and_length_mismatch() -> None:
    with pytest.raises(ValueError, match="not among"):
        classification_report(["angry"], ["neutral"], LABELS)
    with pytest.raises(ValueError, match="predictions"):
        classification_report(["neutral"], [], LABELS)


def test_written_report_has_json_text_and_png(tmp_path: Path) -> None:
    report = classification_report(GOLD, PRED, LABELS)
    files = write_report(report, tmp_path / "reports", "tweets_int8", "tweets, int8")
    saved = json.loads((tmp_path / "reports" / files["json"]).read_text())
    assert {"accuracy", "macro_recall", "macro_f1", "per_class", "confusion"} <= saved.keys()
    assert saved == report
    png = (tmp_path / "reports" / files["confusion_png"]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    text = (tmp_path / "reports" / files["text"]).read_text()
    assert "macro avg" in text and format_report(report) in text
