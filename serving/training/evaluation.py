"""Classification reports: per-class precision/recall/F1, macro averages, confusion matrices."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
    """Write `<stem>.json`, `<stem>.txt` and `<stem>_confusion.png`; return their file names."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "json": f"{stem}.json",
        "text": f"{stem}.txt",
        "confusion_png": f"{stem}_confusion.png",
    }
    (directory / files["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (directory / files["text"]).write_text(f"{title}\n\n{format_report(report)}\n")
    plot_confusion(report, directory / files["confusion_png"], title)
    return files
