"""The online-learning scenario: TweetEval tweets with feedback, then a switch to Financial
PhraseBank sentences. Reports detection delay, false alarms before the switch, new-domain
accuracy before and after the promoted fine-tune, old-domain macro recall (forgetting),
and the time from the switch until the promoted version labels the stream.

Runs a real broker, a classify worker, the model watch and the trainer as processes, on
a copy of an exported version (default: the newest under triton_models). With `--adapter
full,lora` the scenario runs once per adapter of the trainer's fine-tune, each on its own
copy of the same version, and one table compares them.
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
NAME = "feedpulse_classifier"


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
    """Run the scenario once per adapter, each on a copy of one version; print each run's
    figures against the targets, then one table of all runs."""
    args = parse_args()
    base = load_version(args.repository, NAME, args.version)
    streams = read_streams(args)
    before = scores(args.repository, NAME, base.version, args.data, load_settings().model_variant)
    rows = [run_adapter(args, base.version, adapter, streams, before) for adapter in args.adapter]
    print(f"\nbase version {base.version}, {len(rows)} runs of the scenario:")
    print_comparison(rows, before)


def run_adapter(
    args: argparse.Namespace,
    version: int,
    adapter: str,
    streams: tuple[list[tuple[str, str]], list[tuple[str, str]]],
    before: dict[str, float],
) -> dict[str, Any]:
    """The scenario with the trainer fine-tuning through `adapter`, on a fresh copy of the
    base version; its report, and its row of the comparison."""
    base = load_version(args.repository, NAME, version)
    work = (
        Path(tempfile.mkdtemp(prefix=f"feedpulse-online-{adapter}-"))
        if args.keep is None
        else args.keep / adapter
    )
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "models"
    shutil.copytree(
        base.path, repo / NAME / str(base.version), ignore=shutil.ignore_patterns("*.pt")
    )
    result, settings, started = run_online(args, work, repo, *streams, adapter=adapter)
    summary = result.summary()
    summary["base_version"] = base.version
    summary["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=2), file=sys.stderr)
    table = {"before": before}
    row: dict[str, Any] = {"adapter": adapter, "seconds": result.seconds_to_promotion}
    if result.promoted_version is not None:
        promoted = load_version(repo, NAME, result.promoted_version)
        table["after"] = scores(repo, NAME, promoted.version, args.data, settings.model_variant)
        row.update(table["after"], training=promoted.manifest["training"]["result"])
    print(
        f"\n[{adapter}] base version {base.version} ({settings.model_variant}); run files in {work}"
    )
    print_report(result, summary, table, len(streams[0]))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return row


def print_comparison(rows: list[dict[str, Any]], before: dict[str, float]) -> None:
    """One line per adapter: fine-tuning cost, time to promotion, new-domain gain and
    old-domain drop against the same base version."""
    print(
        "| adapter | trainable parameters | fine-tune steps | fine-tune s | switch to promotion s "
        "| FPB test accuracy (gain) | TweetEval test macro recall (drop) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    fpb, recall = before["fpb_accuracy"], before["tweeteval_macro_recall"]
    print(f"| base | - | - | - | - | {fpb:.3f} | {recall:.3f} |")
    for row in rows:
        if "training" not in row:
            print(f"| {row['adapter']} | - | - | - | not promoted | - | - |")
            continue
        t = row["training"]
        print(
            f"| {row['adapter']} | {t.get('trainable_params', 0):,} | {t['steps']} "
            f"| {t['seconds']:.0f} | {row['seconds']:.0f} "
            f"| {row['fpb_accuracy']:.3f} ({row['fpb_accuracy'] - fpb:+.3f}) "
            f"| {row['tweeteval_macro_recall']:.3f} ({recall - row['tweeteval_macro_recall']:.3f}) |"
        )


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
    parser.add_argument(
        "--adapter",
        type=adapters,
        default=["full"],
        help="the trainer's fine-tune, comma-separated to run the scenario once each: full,lora",
    )
    return parser.parse_args()


def adapters(value: str) -> list[str]:
    """`full,lora` as a list, each one checked."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    wrong = [n for n in names if n not in ("full", "lora")]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"adapters are full or lora, not {value!r}")
    return names


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
    *,
    adapter: str = "full",
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
            "finetune_adapter": adapter,
            # The run's own: a snapshot left by an earlier run (another broker) would resume.
            "watch_state_dir": work / "watch",
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
