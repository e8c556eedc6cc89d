"""Model quality, side by side: the fast path (frozen encoder + linear heads), multi-task
fine-tuning, and an incremental fine-tune of that model on a new domain (Financial
PhraseBank) with replay of the old ones, all through `feedpulse train`'s own code path.

Each stage exports a version (reports and model card beside it) into --repository and
prints its figures; the last line is a JSON summary. The whole run takes about an hour
on 2 cores; `--finetuned N` reuses an existing fine-tuned version instead of training one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from streams.learning.training import default_task_dirs, resolve_version, run_training  # noqa: E402
from streams.settings import load_settings  # noqa: E402

TWEETS, NEWS, FINANCE = "tweeteval_sentiment", "ag_news", "financial_phrasebank"


def row(name: str, test: dict[str, Any]) -> str:
    """One table row: TweetEval macro recall, AG News accuracy, FPB accuracy, fp32/int8."""

    def pair(data: str, metric: str) -> str:
        got = [test.get(f"{data}/{v}", {}).get(metric) for v in ("fp32", "int8")]
        return " / ".join("-" if g is None else f"{g:.4f}" for g in got)

    return (
        f"| {name} | {pair(TWEETS, 'macro_recall')} | {pair(NEWS, 'accuracy')} "
        f"| {pair(FINANCE, 'accuracy')} | {pair(FINANCE, 'macro_f1')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(".feedpulse/bench-models"))
    parser.add_argument("--finetuned", default=None, help="reuse this fine-tuned version")
    parser.add_argument("--skip-heads", action="store_true", help="skip the fast-path stage")
    parser.add_argument("--limit", type=int, default=None, help="rows per split (quick check)")
    parser.add_argument("--replay-rows", type=int, default=4000)
    args = parser.parse_args()
    settings = load_settings(model_repository=args.repository)
    console = Console(stderr=True)
    results: dict[str, Any] = {}

    if args.finetuned is None:
        console.rule("multi-task fine-tuning")
        results["finetuned"] = run_training(
            settings, limit=args.limit, console=console, reason="bench: fine-tuning"
        )
        base = str(results["finetuned"]["version"])
    else:
        version = resolve_version(settings, args.finetuned)
        results["finetuned"] = {"version": version.version, **version.manifest["evaluation"]}
        base = str(version.version)

    console.rule(f"incremental fine-tune of version {base} on {FINANCE}, with replay")
    dirs = default_task_dirs(settings)
    results["incremental"] = run_training(
        settings,
        task_dirs={"sentiment": settings.data_dir / FINANCE},
        from_version=base,
        replay_dirs=dirs,
        replay_rows=args.replay_rows,
        limit=args.limit,
        console=console,
        reason=f"bench: new domain {FINANCE}",
    )

    if not args.skip_heads:
        console.rule("fast path: frozen encoder + linear heads")
        results["heads"] = run_training(
            settings, mode="heads", limit=args.limit, console=console, reason="bench: fast path"
        )

    lines = [
        "| model | TweetEval macro recall (fp32 / int8) | AG News accuracy | FPB accuracy "
        "| FPB macro-F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    if "heads" in results:
        lines.append(row(f"fast path (v{results['heads']['version']})", results["heads"]["test"]))
    inc = results["incremental"]
    lines.append(row(f"fine-tuned (v{base})", {**inc["baseline"], **results["finetuned"]["test"]}))
    lines.append(row(f"fine-tuned + {FINANCE} (v{inc['version']})", inc["test"]))
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({k: {"version": v["version"], "test": v["test"]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
