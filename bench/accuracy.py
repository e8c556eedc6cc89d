"""Accuracy of the current model on public test sets nobody here wrote (../shared/data).

TweetEval sentiment: macro-averaged recall (its headline metric) and accuracy.
AG News topics: accuracy. Prints one JSON line; both ONNX variants, side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.onnx_backend import OnnxClassifier  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.training import ensure_model  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SUITES = {
    "tweeteval_sentiment": ("tweeteval_sentiment/test.jsonl", "sentiment"),
    "ag_news": ("ag_news/test.jsonl", "topic"),
}


def read_rows(path: Path, limit: int | None) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit and len(rows) == limit:
                break
    return rows


def scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and macro-averaged recall."""
    hits = Counter(g for g, p in zip(gold, predicted, strict=True) if g == p)
    totals = Counter(gold)
    recall = [hits[label] / n for label, n in totals.items()]
    return {
        "accuracy": round(sum(hits.values()) / len(gold), 4),
        "macro_recall": round(sum(recall) / len(recall), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="rows per test set (default all)")
    args = parser.parse_args()
    settings = load_settings()
    model = ensure_model(settings)
    report: dict[str, Any] = {"model": f"{model.name}/{model.version}"}
    for variant in ("fp32", "int8"):
        clf = OnnxClassifier(model, variant=variant, chunk_size=settings.inference_chunk)
        for suite, (rel, task) in SUITES.items():
            rows = read_rows(DATA / rel, args.limit)
            started = time.perf_counter()
            predicted: list[str] = []
            for i in range(0, len(rows), 64):
                preds = clf.classify_sync([r["text"] for r in rows[i : i + 64]])
                predicted.extend(p.tasks[task].label for p in preds)
            elapsed = time.perf_counter() - started
            result = scores([r["label"] for r in rows], predicted)
            result.update(rows=len(rows), texts_per_s=round(len(rows) / elapsed, 1))
            report[f"{suite}_{variant}"] = result
            print(f"{suite} {variant}: {result}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
