"""Accuracy of a model version on public test sets nobody here wrote (../shared/data).

TweetEval sentiment (headline metric: macro recall), AG News topics (accuracy) and
Financial PhraseBank sentiment (accuracy, macro-F1; a domain the default model is not
trained on), served by ONNX Runtime fp32 and int8 side by side. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.training.pipeline import evaluate_version  # noqa: E402
from streams.learning.training import ensure_model, load_sets, resolve_version  # noqa: E402
from streams.settings import load_settings  # noqa: E402

SUITES = {
    "sentiment": "tweeteval_sentiment",
    "topic": "ag_news",
}
NEW_DOMAIN = {"sentiment": "financial_phrasebank"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None, help="version number or latest (default)")
    parser.add_argument("--repository", type=Path, default=None, help="model repository")
    parser.add_argument("--limit", type=int, default=None, help="rows per test set (default all)")
    args = parser.parse_args()
    settings = load_settings(model_repository=args.repository)
    model = resolve_version(settings, args.version) if args.version else ensure_model(settings)
    sets = [
        *load_sets({k: settings.data_dir / v for k, v in SUITES.items()}, limit=args.limit),
        *load_sets({k: settings.data_dir / v for k, v in NEW_DOMAIN.items()}, limit=args.limit),
    ]
    report: dict[str, object] = {"model": f"{model.name}/{model.version}"}
    for variant in ("fp32", "int8"):
        started = time.perf_counter()
        for name, r in evaluate_version(model, sets, variant).items():
            keep = {k: r[k] for k in ("accuracy", "macro_recall", "macro_f1", "rows")}
            report[f"{name}/{variant}"] = keep
            print(f"{name} {variant}: {keep}", file=sys.stderr)
        rows = sum(len(s.test) for s in sets)
        report[f"texts_per_s/{variant}"] = round(rows / (time.perf_counter() - started), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
