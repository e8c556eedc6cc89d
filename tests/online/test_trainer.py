"""The promotion rule, how a job's rows are split, and jobs and decisions on the wire."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from online.jobs import Decision, FineTuneJob
from online.trainer import MIN_TASK_ROWS, PromotionRule, job_sets
from serving.tasks import DEFAULT_TASKS, Gold, TaskHead


@pytest.mark.parametrize(
    ("gains", "drops", "promote", "why"),
    [
        ({"fpb": 0.20}, {"tweeteval": 0.01}, True, "new-domain accuracy fpb +0.200"),
        ({"fpb": 0.04}, {"tweeteval": 0.0}, False, "below the margin"),
        ({"fpb": 0.20}, {"tweeteval": 0.03}, False, "above the allowed"),
        ({}, {}, False, "no new-domain rows"),
    ],
)
def test_promotion_needs_the_margin_on_new_rows_and_little_loss_on_old(
    gains: dict[str, float], drops: dict[str, float], promote: bool, why: str
) -> None:
    decided, reason = PromotionRule(margin=0.05, max_drop=0.02).decide(gains, drops)
    assert decided is promote
    assert why in reason


def job(rows: Mapping[str, Sequence[tuple[str, Gold]]]) -> FineTuneJob:
    listed = {task: list(task_rows) for task, task_rows in rows.items()}
    return FineTuneJob(model="m", base_version=3, rows=listed, reasons=[{"detector": "x"}])


def test_job_rows_split_into_train_val_and_held_out_rows_without_overlap() -> None:
    rows = [
        (f"sentence number {i}", ("negative", "neutral", "positive")[i % 3]) for i in range(1000)
    ]
    rows.append(("a label the head does not have", "furious"))
    (data,) = job_sets(job({"sentiment": rows}), DEFAULT_TASKS, holdout=0.2)
    texts = [{r.text for r in split} for split in (data.train, data.val, data.test)]
    assert sum(map(len, texts)) == 1000
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert 150 < len(texts[2]) < 250 and 50 < len(texts[1]) < 110


def test_tasks_with_too_few_rows_or_no_head_are_left_out() -> None:
    few = [("x", "neutral")] * (MIN_TASK_ROWS - 1)
    many = [(f"t{i}", "neutral") for i in range(MIN_TASK_ROWS)]
    sets = job_sets(job({"sentiment": few, "mood": many, "topic": []}), DEFAULT_TASKS, 0.2)
    assert sets == []


def test_multi_label_rows_become_label_sets_and_rows_that_do_not_fit_are_left_out() -> None:
    tags = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel")
    answers: list[Gold] = [("urgent", "bug"), (), ("billing",)]
    rows = [(f"ticket {i}", answers[i % 3]) for i in range(300)]
    # A label the head lost since, and a single label where a set belongs.
    rows += [("an old label", ("urgent", "refund")), ("not a set", "bug")]
    (data,) = job_sets(job({"tags": rows}), (tags,), holdout=0.2)
    kept = [r for split in (data.train, data.val, data.test) for r in split]
    assert len(kept) == 300 and data.task == tags
    assert {r.labels["tags"] for r in kept} == set(answers)


def test_a_multi_class_head_leaves_out_label_sets() -> None:
    rows: list[tuple[str, Gold]] = [(f"s{i}", "neutral") for i in range(MIN_TASK_ROWS)]
    rows.append(("a set", ("neutral",)))
    (data,) = job_sets(job({"sentiment": rows}), DEFAULT_TASKS, 0.2)
    assert sum(len(s) for s in (data.train, data.val, data.test)) == MIN_TASK_ROWS


def test_a_job_survives_the_wire_with_its_rows() -> None:
    original = job(
        {
            "sentiment": [("ünïcode 🚀 text", "positive")] * 3,
            "tags": [("a ticket", ("urgent", "bug")), ("another", ())],
        }
    )
    decoded = FineTuneJob.decode(original.encode())
    assert decoded == original


@pytest.mark.parametrize("value", [b"", b"{}", b'{"id": "x", "rows_gzip_b64": "%%%"}'])
def test_a_malformed_job_is_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a fine-tuning job"):
        FineTuneJob.decode(value)


def test_a_decision_survives_the_wire() -> None:
    decision = Decision("j", "m", "promoted", "why", 3, 4, {"fpb": {"served": 0.5}})
    assert Decision.decode(decision.encode()) == decision
    with pytest.raises(ValueError, match="not a fine-tuning decision"):
        Decision.decode(b'{"job_id": "j"}')


def test_compare_judges_multilabel_sets_by_macro_f1_and_skips_new_heads() -> None:
    from online.trainer import compare
    from serving.training.data import TaskData

    emotion = TaskHead("emotion", ("anger", "joy"), "multilabel")
    fresh = TaskHead("spam", ("ham", "spam"))
    feedback = TaskData(emotion, [], [], [], source="feedback-emotion")
    new_head = TaskData(fresh, [], [], [], source="feedback-spam")
    test = {
        "feedback-emotion/int8": {"accuracy": 0.2, "macro_f1": 0.55, "rows": 10},
        "feedback-spam/int8": {"accuracy": 0.9, "macro_f1": 0.9, "rows": 10},
    }
    baseline = {"feedback-emotion/int8": {"accuracy": 0.3, "macro_f1": 0.40, "rows": 10}}
    gains, drops, figures = compare(test, baseline, [feedback, new_head], [], "int8")
    assert gains == {"feedback-emotion": pytest.approx(0.15)}  # macro-F1, not accuracy
    assert drops == {}
    assert figures["feedback-spam"]["served"] is None
