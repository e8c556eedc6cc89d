"""Multi-label quality and its cost to the other heads, side by side in one run.

Trains (fast path, frozen encoder + heads, or `--mode finetune`) two models through
`feedpulse train`'s code path: the default tasks (sentiment on TweetEval, topic on AG News),
then the same plus a multi-label emotion head on GoEmotions (28 labels; `--emotion-data`
picks another set, e.g. goemotions_ekman). Prints a table and a JSON line: GoEmotions
macro-F1 on the test split (thresholds chosen on validation), beside TweetEval macro recall
and AG News accuracy with and without the emotion head.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from serving.training.declaration import TaskSpec, default_declaration  # noqa: E402
from streams.learning.training import rich_progress  # noqa: E402
from streams.settings import load_settings  # noqa: E402

FIGURES = {
    "tweeteval_sentiment": "macro_recall",
    "ag_news": "accuracy",
}


def train(declaration: Any, repository: Path, mode: str, limit: int | None) -> dict[str, Any]:
    """Train and export one version per `declaration`; its test figures."""
    from serving.training.declaration import load_declared
    from serving.training.pipeline import TrainPlan, train_version

    sets = load_declared(declaration, limit=limit)
    plan = TrainPlan(sets=sets, mode="heads" if mode == "heads" else "finetune")
    with rich_progress(Console(stderr=True)) as progress:
        _, summary = train_version(plan, repository=repository, name="bench", progress=progress)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("heads", "finetune"), default="heads")
    parser.add_argument("--emotion-data", default="goemotions")
    parser.add_argument("--limit", type=int, default=None, help="rows per split (quick check)")
    args = parser.parse_args()
    settings = load_settings()
    base = default_declaration(settings.data_dir.resolve())
    with_emotion = base.model_copy(
        update={"tasks": [*base.tasks, TaskSpec(name="emotion", data=args.emotion_data)]}
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="feedpulse-bench-") as tmp:
        for name, declaration in (("without", base), ("with", with_emotion)):
            summary = train(declaration, Path(tmp) / name, args.mode, args.limit)
            results[name] = {
                "test": summary["test"],
                "seconds": summary["training"]["train_seconds"],
            }
    emotion = args.emotion_data
    print(f"| heads | variant | TweetEval macro recall | AG News accuracy | {emotion} macro-F1 |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("without", "with"):
        for variant in ("fp32", "int8"):
            test = results[name]["test"]
            cells = [f"{test[f'{d}/{variant}'][m]:.4f}" for d, m in FIGURES.items()]
            ml = test.get(f"{emotion}/{variant}", {}).get("macro_f1")
            cells.append("-" if ml is None else f"{ml:.4f}")
            print(f"| {name} emotion | {variant} | {' | '.join(cells)} |")
    line = {"mode": args.mode, "emotion_data": emotion, **results}
    for variant in ("fp32", "int8"):
        for d, m in FIGURES.items():
            key = f"{d}/{variant}"
            line[f"cost_{d}_{m}_{variant}"] = round(
                results["without"]["test"][key][m] - results["with"]["test"][key][m], 4
            )
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
