"""The online-learning scenario: TweetEval tweets with feedback, then a switch to Financial
PhraseBank sentences. Reports detection delay, false alarms before the switch, new-domain
accuracy before and after the promoted fine-tune, old-domain macro recall (forgetting),
and the time from the switch until the promoted version labels the stream.

Runs a real broker, a classify worker, the model watch and the trainer as processes, on
a copy of an exported version (default: the newest under triton_models).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.model_store import load_version  # noqa: E402
from serving.tasks import DEFAULT_TASKS  # noqa: E402
from serving.training.data import LabeledText, TaskData  # noqa: E402
from serving.training.pipeline import evaluate_version  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402
from streams.testing.online_scenario import (  # noqa: E402
    ScenarioResult,
    online_processes,
    run_scenario,
)
from streams.testing.replay import read_tweets  # noqa: E402

SENTIMENT = DEFAULT_TASKS[0]


def test_set(path: Path, name: str) -> TaskData:
    rows = [LabeledText(t, {"sentiment": lab}) for t, lab in read_tweets(path)]
    return TaskData(SENTIMENT, [], [], rows, source=name)


def scores(repo: Path, name: str, version: int, data: Path, variant: str) -> dict[str, float]:
    v = load_version(repo, name, version)
    sets = [
        test_set(data / "financial_phrasebank" / "test.jsonl", "fpb"),
        test_set(data / "tweeteval_sentiment" / "test.jsonl", "tweeteval"),
    ]
    reports = evaluate_version(v, sets, variant)
    return {
        "fpb_accuracy": round(reports["fpb"]["accuracy"], 4),
        "tweeteval_macro_recall": round(reports["tweeteval"]["macro_recall"], 4),
    }


def main() -> None:
    """Run the scenario on a copy of one version and print its figures against the targets."""
    args = parse_args()
    name = "feedpulse_classifier"
    base = load_version(args.repository, name, args.version)
    work = Path(tempfile.mkdtemp(prefix="feedpulse-online-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "models"
    shutil.copytree(
        base.path, repo / name / str(base.version), ignore=shutil.ignore_patterns("*.pt")
    )
    before, after = read_streams(args)
    result, settings, started = run_online(args, work, repo, before, after)
    summary = result.summary()
    summary["base_version"] = base.version
    summary["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=2), file=sys.stderr)
    variant = settings.model_variant
    table = {"before": scores(repo, name, base.version, args.data, variant)}
    if result.promoted_version is not None:
        table["after"] = scores(repo, name, result.promoted_version, args.data, variant)
    print(f"\nbase version {base.version} ({variant}); run files in {work}")
    print_report(result, summary, table, len(before))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=REPO / "triton_models")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--stationary", type=int, default=10_000, help="tweets before the switch")
    parser.add_argument("--new-rows", type=int, default=None, help="FPB rows per round (all)")
    parser.add_argument("--rate", type=float, default=60.0, help="items/s")
    parser.add_argument("--lag", type=int, default=20, help="feedback arrives N items later")
    parser.add_argument("--min-feedback", type=int, default=2500)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's files here")
    return parser.parse_args()


def read_streams(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The stationary tweets, then the new-domain sentences, each in a fixed shuffled order."""
    tweets = read_tweets(args.data / "tweeteval_sentiment" / "test.jsonl")
    random.Random(0).shuffle(tweets)
    before = tweets[: args.stationary]
    after = read_tweets(args.data / "financial_phrasebank" / "train.jsonl")
    random.Random(1).shuffle(after)
    after = after[: args.new_rows] if args.new_rows else after
    return before, after


def run_online(
    args: argparse.Namespace,
    work: Path,
    repo: Path,
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
) -> tuple[ScenarioResult, Settings, float]:
    """The scenario on a fresh broker and processes: its result, settings and start time."""
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        overrides = {
            "bootstrap_servers": broker.bootstrap_servers,
            "model_repository": repo,
            "metrics_port": 0,
            "watch_metrics_port": 0,
            "finetune_min_feedback": args.min_feedback,
            "finetune_cooldown_s": 0,
        }
        if args.max_steps:
            overrides["finetune_max_steps"] = args.max_steps
        settings = load_settings(**overrides)
        started = time.time()
        with online_processes(settings, work):
            result = asyncio.run(
                run_scenario(
                    settings, before, after, lag=args.lag, rate=args.rate, timeout_s=args.timeout
                )
            )
    return result, settings, started


def print_report(
    result: ScenarioResult,
    summary: dict[str, Any],
    table: dict[str, dict[str, float]],
    stationary: int,
) -> None:
    """The figures against their targets, and the before/after score table."""
    print(f"detection delay: {result.detection_delay_items} items after the switch (target <= 300)")
    print(f"false alarms on {stationary} stationary tweets: {result.false_alarms} (target 0)")
    print(
        f"switch to promoted version labelling the stream: {result.seconds_to_promotion} s (target <= 900)"
    )
    for d in summary["decisions"]:
        print(f"decision: {d['action']} candidate {d['candidate_version']}: {d['reason']}")
    print("| version | FPB test accuracy | TweetEval test macro recall |")
    print("| --- | --- | --- |")
    for label, row in table.items():
        print(f"| {label} | {row['fpb_accuracy']:.3f} | {row['tweeteval_macro_recall']:.3f} |")
    if "after" in table:
        gain = table["after"]["fpb_accuracy"] - table["before"]["fpb_accuracy"]
        drop = table["before"]["tweeteval_macro_recall"] - table["after"]["tweeteval_macro_recall"]
        print(
            f"new-domain gain {gain:+.3f} (target >= +0.15, after >= 0.80); old-domain drop {drop:.3f} (target <= 0.02)"
        )


if __name__ == "__main__":
    main()
