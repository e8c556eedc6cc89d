"""Train, export, evaluate and document one model version: the path `feedpulse train` and the
online trainer share.

Fresh runs start from a Hugging Face checkpoint; incremental runs start from an exported
version and mix a replay sample of the old domains into the new rows against forgetting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from serving.model_store import MODEL_CARD, REPORTS_DIR, ModelVersion
from serving.tasks import Gold, find_task, same_task
from serving.training.calibration import expected_calibration_error
from serving.training.data import LabeledText, TaskData, data_name, sample
from serving.training.evaluation import task_report, write_report
from serving.training.finetune import FineTuneConfig, fine_tune
from serving.training.model_card import render_model_card
from serving.training.progress import TrainProgress

if TYPE_CHECKING:
    from serving.multihead import MultiHeadModel

Mode = Literal["finetune", "heads"]
SUMMARY_FIGURES = ("accuracy", "macro_recall", "macro_f1", "ece", "rows")
# A linear head on frozen embeddings has learned what it can by here: TweetEval validation
# macro recall was 0.657, 0.661, 0.653 and 0.655 from 12k, 24k, 36k and all 48k rows, while
# embedding every row costs time (the fast path's budget is two minutes on 2 cores).
HEADS_MAX_ROWS = 24_000


@dataclass(frozen=True)
class TrainPlan:
    """What to train on, from where, and how."""

    sets: Sequence[TaskData]
    mode: Mode = "finetune"
    base_checkpoint: str | None = None
    base_version: ModelVersion | None = None
    # Old-domain sets: their train rows are mixed in, their val and test rows checked.
    replay: Sequence[TaskData] = ()
    config: FineTuneConfig = field(default_factory=FineTuneConfig)
    serve_max_length: int = 128
    variants: Sequence[str] = ("fp32", "int8")
    reason: str = "feedpulse train"
    # Fast path only: each set's train rows are a seeded sample of at most this many.
    heads_max_rows: int | None = HEADS_MAX_ROWS


def cap_fast_path(plan: TrainPlan) -> TrainPlan:
    """`plan` with each set's train rows sampled down to `heads_max_rows` on the fast path."""
    if plan.mode != "heads" or plan.heads_max_rows is None:
        return plan
    sets = [
        replace(data, train=sample(data.train, plan.heads_max_rows, plan.config.seed))
        for data in plan.sets
    ]
    return replace(plan, sets=sets)


def evaluate_version(
    version: ModelVersion,
    sets: Sequence[TaskData],
    variant: str,
    *,
    progress: TrainProgress | None = None,
    chunk: int = 512,
) -> dict[str, dict[str, Any]]:
    """A classification report per data set's test split, served by ONNX Runtime `variant`
    (sets whose task the version has no head for, or a head of other labels or kind, are
    left out: a base version before a new or changed head has no figure to compare)."""
    from serving.backends.onnx import OnnxClassifier

    classifier = OnnxClassifier(version, variant=variant)
    reports: dict[str, dict[str, Any]] = {}
    for data in sets:
        task = find_task(version.tasks, data.task.name)
        if not data.test or task is None or not same_task(task, data.task):
            continue
        stage = f"evaluating {data_name(data)} ({variant})"
        predicted: list[Gold] = []
        scores: list[list[float]] = []
        for start in range(0, len(data.test), chunk):
            texts = [r.text for r in data.test[start : start + chunk]]
            for p in classifier.classify_sync(texts):
                answer = p.tasks[task.name]
                predicted.append(answer.labels if answer.labels is not None else answer.label)
                scores.append([answer.scores[label] for label in task.labels])
            if progress:
                progress(stage, len(predicted), len(data.test))
        gold = [r.labels[task.name] for r in data.test]
        report = task_report(task, gold, predicted)
        report["ece"] = expected_calibration_error(task, np.asarray(scores, np.float32), gold)
        reports[data_name(data)] = report
    return reports


def summarize(reports: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """`{"<set>/<variant>": {accuracy, macro_recall, macro_f1}}` from nested reports."""
    return {
        f"{name}/{variant}": {k: r[k] for k in SUMMARY_FIGURES if k in r}
        for variant, by_set in reports.items()
        for name, r in by_set.items()
    }


def baseline_summary(
    version: ModelVersion,
    sets: Sequence[TaskData],
    variants: Sequence[str],
    progress: TrainProgress | None = None,
) -> dict[str, dict[str, float]]:
    """`version`'s test figures on `sets`: from its manifest where it already measured the
    same split, by evaluating it otherwise."""
    known = version.manifest.get("evaluation", {}).get("test", {})
    summary: dict[str, dict[str, float]] = {}
    heads = {t.name: t for t in version.tasks}
    sets = [d for d in sets if d.task.name in heads and same_task(heads[d.task.name], d.task)]
    for variant in variants:
        missing = [
            data
            for data in sets
            if data.test
            and known.get(f"{data_name(data)}/{variant}", {}).get("rows") != len(data.test)
        ]
        summary.update(
            {
                f"{data_name(data)}/{variant}": known[f"{data_name(data)}/{variant}"]
                for data in sets
                if data.test and all(data is not m for m in missing)
            }
        )
        fresh = evaluate_version(version, missing, variant, progress=progress)
        summary.update(summarize({variant: fresh}))
    return summary


def _data_summary(plan: TrainPlan, replay_rows: int) -> list[dict[str, Any]]:
    rows = []
    replay_ids = {id(data) for data in plan.replay}
    for data in [*plan.sets, *plan.replay]:
        rows.append(
            {
                "name": data_name(data),
                "task": data.task.name,
                "source": data.source,
                "role": "replay" if id(data) in replay_ids else "train",
                "train_rows": len(data.train),
                "val_rows": len(data.val),
                "test_rows": len(data.test),
            }
        )
    if replay_rows:
        rows.append({"name": "replay total", "train_rows": replay_rows})
    return rows


def train_version(
    plan: TrainPlan,
    *,
    repository: Path,
    name: str,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: TrainProgress | None = None,
    candidate: bool = False,
) -> tuple[ModelVersion, dict[str, Any]]:
    """Train per `plan`, export a new version with reports and a model card; return both.

    A `candidate` is exported aside and served only once promoted.
    """
    from serving.export import export_version

    if not plan.sets:
        raise ValueError("a training plan needs at least one data set")
    started = time.perf_counter()
    plan = cap_fast_path(plan)
    model, tokenizer, base = _starting_model(plan)
    train: list[LabeledText] = [row for data in plan.sets for row in data.train]
    replay_rows = sum(len(data.train) for data in plan.replay)
    train += [row for data in plan.replay for row in data.train]
    val_sets = [*plan.sets, *plan.replay]

    baseline = (
        baseline_summary(plan.base_version, val_sets, plan.variants, progress)
        if plan.base_version is not None
        else {}
    )

    training: dict[str, Any] = {
        "mode": plan.mode,
        "reason": plan.reason,
        "started_from": (
            f"{plan.base_version.name}/{plan.base_version.version}" if plan.base_version else base
        ),
        "data": _data_summary(plan, replay_rows),
    }
    training.update(
        _train(
            plan,
            model,
            tokenizer,
            train,
            val_sets,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
        )
    )
    training["train_seconds"] = round(time.perf_counter() - started, 1)

    version = export_version(
        model,
        tokenizer,
        repository=repository,
        name=name,
        max_length=plan.serve_max_length,
        base_checkpoint=base,
        metrics={},
        training=training,
        finalize=lambda staged: _finalize(staged, plan, val_sets, baseline, progress),
        candidate=candidate,
    )
    return version, _summary(version, training)


def _summary(version: ModelVersion, training: dict[str, Any]) -> dict[str, Any]:
    """What a caller shows of a trained version: where it is, its evaluation and training."""
    return {
        "model": version.name,
        "version": version.version,
        "path": str(version.path),
        **version.manifest["evaluation"],
        "training": {k: v for k, v in training.items() if k != "config"},
    }


def _starting_model(plan: TrainPlan) -> tuple[MultiHeadModel, Any, str]:
    """The model to train, its tokenizer and the Hugging Face checkpoint it descends from.

    A fresh model gets one head per data set's task. A version keeps its heads and gains
    (or has replaced) those whose task the data declares anew or differently.
    """
    from serving.multihead import (
        MultiHeadModel,
        default_checkpoint,
        load_encoder,
        load_version_model,
    )

    if plan.base_version is not None:
        model, tokenizer = load_version_model(plan.base_version)
        base = str(plan.base_version.manifest.get("base_checkpoint", ""))
    else:
        base = plan.base_checkpoint or default_checkpoint()
        encoder, tokenizer = load_encoder(base)
        model = MultiHeadModel(encoder, ())
    tasks = {data.task.name: data.task for data in [*plan.sets, *plan.replay]}
    # A head the model has with the same labels in another order (labels read from the
    # data come sorted) is the same head: keep it, and its trained weights.
    kept = {t.name: t for t in model.tasks}
    model.declare([kept[n] if n in kept and same_task(kept[n], t) else t for n, t in tasks.items()])
    return model, tokenizer, base


def _train(
    plan: TrainPlan,
    model: MultiHeadModel,
    tokenizer: Any,
    train: list[LabeledText],
    val_sets: Sequence[TaskData],
    *,
    checkpoint_dir: Path | None,
    resume: bool,
    progress: TrainProgress | None,
) -> dict[str, Any]:
    """Fit the heads or fine-tune, per `plan.mode`; what to record of it in the manifest."""
    if plan.mode == "heads":
        from serving.training.heads import fit_heads

        held = [row for data in val_sets for row in data.val]
        heads = fit_heads(
            model,
            tokenizer,
            train,
            held,
            max_length=plan.serve_max_length,
            seed=plan.config.seed,
            progress=progress,
        )
        return {"heads": heads}
    from serving.training.prediction import calibrate

    result = fine_tune(
        model,
        tokenizer,
        train,
        val_sets,
        plan.config,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
    )
    # Calibration predicts every validation row: on the run's device, then back to the CPU,
    # where export traces the model.
    model.to(result.device)
    calibration = calibrate(model, tokenizer, val_sets, plan.serve_max_length)
    model.cpu()
    return {"config": asdict(plan.config), "result": asdict(result), "calibration": calibration}


def _finalize(
    staged: ModelVersion,
    plan: TrainPlan,
    val_sets: Sequence[TaskData],
    baseline: dict[str, dict[str, float]],
    progress: TrainProgress | None,
) -> dict[str, Any]:
    """Test the staged version's every variant: reports beside it, a model card, and the
    evaluation for its manifest."""
    reports_dir = staged.path / REPORTS_DIR
    reports = {v: evaluate_version(staged, val_sets, v, progress=progress) for v in plan.variants}
    for variant, by_set in reports.items():
        for set_name, report in by_set.items():
            title = f"{staged.name} v{staged.version} {variant}: {set_name} test"
            write_report(report, reports_dir, f"{set_name}_{variant}", title)
    evaluation: dict[str, Any] = {
        "test": summarize(reports),
        "baseline": baseline,
    }
    if baseline and plan.base_version is not None:
        evaluation["baseline_version"] = plan.base_version.version
    card = render_model_card({**staged.manifest, "evaluation": evaluation}, reports)
    (staged.path / MODEL_CARD).write_text(card)
    return {"evaluation": evaluation}
