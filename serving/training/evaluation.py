"""Classification reports: per-class precision/recall/F1, macro averages, confusion matrices."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.tasks import Gold, TaskHead


def classification_report(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, accuracy, macro averages and the confusion matrix.

    `confusion[i][j]` counts rows whose gold label is `labels[i]` and prediction `labels[j]`.
    A class nobody predicted has precision 0 (not NaN), so macro averages stay defined.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("cannot report on zero rows")
    index = {label: i for i, label in enumerate(labels)}
    unknown = {g for g in gold if g not in index} | {p for p in predicted if p not in index}
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among {list(labels)}")
    confusion = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        confusion[index[g]][index[p]] += 1
    per_class: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted_n = sum(row[i] for row in confusion)
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
    present = [label for label in labels if per_class[label]["support"]]

    def macro(metric: str) -> float:
        return round(sum(per_class[label][metric] for label in present) / len(present), 4)

    return {
        "rows": len(gold),
        "labels": list(labels),
        "accuracy": round(sum(confusion[i][i] for i in range(len(labels))) / len(gold), 4),
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "per_class": per_class,
        "confusion": confusion,
    }


def multilabel_report(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, Any]:
    """Per-label precision/recall/F1/support, macro and micro F1, and exact-match accuracy.

    `accuracy` is the share of rows whose predicted set equals the gold set. A label nobody
    predicted has precision 0, and macro averages run over the labels present in `gold`.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold label sets but {len(predicted)} predictions")
    if not gold:
        raise ValueError("cannot report on zero rows")
    unknown = {x for row in [*gold, *predicted] for x in row} - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among {list(labels)}")
    per_class: dict[str, dict[str, float]] = {}
    tp_all = fp_all = fn_all = 0
    for label in labels:
        tp = sum(label in g and label in p for g, p in zip(gold, predicted, strict=True))
        fp = sum(label not in g and label in p for g, p in zip(gold, predicted, strict=True))
        fn = sum(label in g and label not in p for g, p in zip(gold, predicted, strict=True))
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        per_class[label] = _scores(tp, fp, fn)
    # No gold label at all (a tiny split): every label is averaged rather than none.
    present = [label for label in labels if per_class[label]["support"]] or list(labels)

    def macro(metric: str) -> float:
        return round(sum(per_class[label][metric] for label in present) / len(present), 4)

    exact = sum(set(g) == set(p) for g, p in zip(gold, predicted, strict=True))
    return {
        "rows": len(gold),
        "labels": list(labels),
        "kind": "multilabel",
        "accuracy": round(exact / len(gold), 4),
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "micro_f1": _scores(tp_all, fp_all, fn_all)["f1"],
        "per_class": per_class,
    }


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "support": tp + fn,
    }


def task_report(task: TaskHead, gold: Sequence[Gold], predicted: Sequence[Gold]) -> dict[str, Any]:
    """The report that fits the task's kind (multi-label rows carry label tuples)."""
    if task.multilabel:
        as_sets = [[g] if isinstance(g, str) else list(g) for g in gold]
        return multilabel_report(
            as_sets, [[p] if isinstance(p, str) else list(p) for p in predicted], task.labels
        )
    return classification_report([str(g) for g in gold], [str(p) for p in predicted], task.labels)


def headline(report: dict[str, Any]) -> float:
    """The figure a data set is judged by: macro-F1 (multi-label) or macro recall."""
    return float(report["macro_f1" if report.get("kind") == "multilabel" else "macro_recall"])


def format_report(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (as printed by the CLI and the model card)."""
    width = max(12, *(len(label) for label in report["labels"]))
    lines = [f"{'':{width}}  precision  recall      f1  support"]
    for label in report["labels"]:
        c = report["per_class"][label]
        lines.append(
            f"{label:{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  "
            f"{c['f1']:6.4f}  {c['support']:7d}"
        )
    lines.append(
        f"{'macro avg':{width}}  {report['macro_precision']:9.4f}  {report['macro_recall']:6.4f}  "
        f"{report['macro_f1']:6.4f}  {report['rows']:7d}"
    )
    if "micro_f1" in report:
        lines.append(f"{'micro avg':{width}}  {'':9}  {'':6}  {report['micro_f1']:6.4f}")
        lines.append(f"{'exact match':{width}}  {'':9}  {'':6}  {report['accuracy']:6.4f}")
    else:
        lines.append(f"{'accuracy':{width}}  {'':9}  {'':6}  {report['accuracy']:6.4f}")
    return "\n".join(lines)


def plot_confusion(report: dict[str, Any], path: Path, title: str) -> None:
    """Write the confusion matrix as a PNG heat map, counts in the cells, rows = gold."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    labels = report["labels"]
    counts = report["confusion"]
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 1.1 * len(labels) + 1.6), dpi=100)
    try:
        image = ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(title, fontsize=10)
        peak = max(max(row) for row in counts) or 1
        for i, row in enumerate(counts):
            for j, n in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(n),
                    ha="center",
                    va="center",
                    color="white" if n > peak / 2 else "black",
                )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write_report(report: dict[str, Any], directory: Path, stem: str, title: str) -> dict[str, str]:
    """Write `<stem>.json`, `<stem>.txt` and (multi-class) `<stem>_confusion.png`; return
    their file names."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"json": f"{stem}.json", "text": f"{stem}.txt"}
    (directory / files["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (directory / files["text"]).write_text(f"{title}\n\n{format_report(report)}\n")
    if "confusion" in report:
        files["confusion_png"] = f"{stem}_confusion.png"
        plot_confusion(report, directory / files["confusion_png"], title)
    return files
