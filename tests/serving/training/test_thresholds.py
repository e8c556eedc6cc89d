"""Multi-label pieces worked out by hand: per-label thresholds, the report, the loss targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.tasks import TaskHead
from serving.training.data import LabeledText
from serving.training.evaluation import format_report, multilabel_report
from serving.training.loss import IGNORE, positive_weights, task_targets
from serving.training.thresholds import choose_thresholds, decide

TASK = TaskHead("emotion", ("anger", "joy", "fear"), "multilabel")


def test_thresholds_maximise_each_labels_f1_and_default_without_positives() -> None:
    scores = np.array(
        [[0.9, 0.3, 0.1], [0.6, 0.2, 0.2], [0.4, 0.8, 0.3], [0.2, 0.25, 0.1]], dtype=np.float32
    )
    gold = [("anger",), ("anger", "joy"), ("joy",), ()]
    cuts = choose_thresholds(TASK, scores, gold)
    # anger: any cut in (0.4, 0.6] catches both positives and nothing else; the highest wins.
    assert cuts[0] == pytest.approx(0.6)
    # joy: positives at 0.2 and 0.8, a negative at 0.3 and 0.25: firing on all of 0.2..0.8
    # (F1 0.67) ties with firing only on 0.8 (F1 0.67); the higher cut is kept.
    assert cuts[1] == pytest.approx(0.8)
    assert cuts[2] == 0.5  # no positives
    assert decide(TaskHead("emotion", TASK.labels, "multilabel", cuts), scores) == [
        ("anger",),
        ("anger",),
        ("joy",),
        (),
    ]


def test_multilabel_report_by_hand() -> None:
    gold = [["anger"], ["anger", "joy"], ["joy"], []]
    pred = [["anger"], ["anger"], ["joy", "fear"], []]
    report = multilabel_report(gold, pred, TASK.labels)
    assert report["per_class"]["anger"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 2,
    }
    assert report["per_class"]["joy"]["recall"] == 0.5
    # fear has no gold rows: left out of the macro average.
    assert report["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2, abs=1e-4)
    assert report["accuracy"] == 0.5  # rows 1 and 4 match exactly
    assert report["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1), abs=1e-4)
    assert "exact match" in format_report(report)
    with pytest.raises(ValueError, match="not among"):
        multilabel_report([["rage"]], [[]], TASK.labels)


def test_loss_targets_mark_unlabeled_rows_and_weight_rare_labels() -> None:
    rows = [
        LabeledText("a", {"emotion": ("anger", "joy")}),
        LabeledText("b", {"sentiment": "negative"}),
        LabeledText("c", {"emotion": ("joy",)}),
        LabeledText("d", {"emotion": ()}),
    ]
    y = task_targets([TASK], rows)["emotion"]
    assert y.tolist() == [[1, 1, 0], [IGNORE] * 3, [0, 1, 0], [0, 0, 0]]
    weights = positive_weights(y)
    # anger: 1 positive of 3 labeled rows -> sqrt(2); joy: 2 of 3 -> sqrt(1/2); fear: none.
    assert weights[0] == pytest.approx(2**0.5) and weights[1] == pytest.approx(0.5**0.5)
    assert weights[2] == pytest.approx(3**0.5)
    assert isinstance(weights, torch.Tensor)


def test_a_split_without_any_gold_label_reports_instead_of_crashing() -> None:
    report = multilabel_report([[], []], [["anger"], []], TASK.labels)
    assert report["macro_f1"] == 0.0 and report["accuracy"] == 0.5


def test_manifest_thresholds_must_fit_the_labels() -> None:
    entry = {"name": "emotion", "labels": ["anger", "joy"], "kind": "multilabel"}
    assert TaskHead.from_manifest({**entry, "thresholds": [0.3, 0.6]}).threshold(1) == 0.6
    with pytest.raises(ValueError, match="one threshold in"):
        TaskHead.from_manifest({**entry, "thresholds": [0.3]})
    with pytest.raises(ValueError, match="one threshold in"):
        TaskHead.from_manifest({**entry, "thresholds": [0.3, 1.5]})
