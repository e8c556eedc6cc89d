"""Triton benchmark, side by side in one run, on the same real texts:

(a) raw model ceiling: in-process ONNX Runtime on pre-tokenized micro-batches
(b) feedpulse end to end, in-process backend
(t) feedpulse end to end through a local Triton server (python backend, same int8 graph)
(u) as (t) with client-side micro-batching off: one message per batch, one request each

(a), (b), (t) and (u) alternate over several rounds (medians reported); then (b) and (t)
again with a second worker in each group (two in-process workers on one machine; two
workers sending to one Triton, whose dynamic batcher merges their requests); then p50/p99
end-to-end latency of warmed (b) and (t) at half of (b)'s measured maximum. One JSON line.
Run alone: two CPU-heavy jobs at once distort every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from throughput import (  # noqa: E402
    RawCeiling,
    bench_latency,
    drain_rate,
    fresh_topics,
    load_texts,
)

from streams.classify.backend import local_triton  # noqa: E402
from streams.classify.processes import WorkerProcesses  # noqa: E402
from streams.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.kafka.topics import ensure_topics, pipeline_topics  # noqa: E402
from streams.learning.training import ensure_model  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402

WARM = ("warm_p50_ms", "warm_p99_ms")
SCALED = ("onnx", "triton")  # measured again with a second worker in the group


async def start_worker(
    settings: Settings, logs: Path, warm: list[str], tag: str
) -> WorkerProcesses:
    """A worker process on its own topics, warmed up on `warm`."""
    await ensure_topics(settings, pipeline_topics(settings))
    workers = WorkerProcesses(settings, logs / tag)
    (logs / tag).mkdir()
    workers.start(1)
    await workers.wait_ready()
    await drain_rate(settings, warm, f"warm-{tag}")
    return workers


async def add_worker(
    workers: WorkerProcesses, settings: Settings, warm: list[str], tag: str
) -> None:
    """A second worker in the same group, once it owns partitions, warmed up on `warm`."""
    workers.start(1)
    await workers.wait_ready(only=[len(workers.procs) - 1])
    await drain_rate(settings, warm, f"warm2-{tag}")


async def two_worker_rates(
    setups: dict[str, Settings],
    workers: dict[str, WorkerProcesses],
    texts: list[str],
    rounds: int,
) -> dict[str, list[float]]:
    """Rounds of in-process and Triton drains with two workers per group."""
    for name in SCALED:
        await add_worker(workers[name], setups[name], texts[:200], name)
    rates: dict[str, list[float]] = {f"{name}_2": [] for name in SCALED}
    for n in range(rounds):
        for name in SCALED:
            rates[f"{name}_2"].append(await drain_rate(setups[name], texts, f"round{n}-{name}-2"))
        print(f"two workers, round {n}: { ({k: round(v[-1], 1) for k, v in rates.items()}) }")
    return rates


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1500, help="messages per round")
    parser.add_argument(
        "--unbatched-texts", type=int, default=400, help="messages per round of (u)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    # A cold worker drains its start's backlog at its spare rate, which through Triton is
    # small at half of (b)'s rate: warm begins well after that.
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--warm-seconds", type=float, default=30.0)
    args = parser.parse_args()

    base = load_settings(metrics_port=0)
    model = ensure_model(base)
    texts = load_texts(args.texts)
    logs = Path(tempfile.mkdtemp(prefix="feedpulse-bench-triton-"))
    print(f"model {model.name}/{model.version}; logs in {logs}", file=sys.stderr)
    ports = {"triton_http_port": free_port(), "triton_grpc_port": free_port()}
    base = base.model_copy(update={**ports, "triton_metrics_port": free_port()})

    rates: dict[str, list[float]] = {"raw": [], "onnx": [], "triton": [], "triton_unbatched": []}
    with EmbeddedBroker() as broker, local_triton(base, logs / "triton.log") as triton:
        triton_url = {"backend": "triton", "triton_url": triton.grpc_url}
        setups = {
            "onnx": fresh_topics(base, broker),
            "triton": fresh_topics(base, broker).model_copy(update=triton_url),
            "triton_unbatched": fresh_topics(base, broker).model_copy(
                update={**triton_url, "max_batch": 1}
            ),
        }
        raw = RawCeiling(model, texts, base)
        workers = {
            name: await start_worker(s, logs, texts[:200], name) for name, s in setups.items()
        }
        try:
            for n in range(args.rounds):
                rates["raw"].append(raw.one_pass())
                for name, settings in setups.items():
                    batch = texts if name != "triton_unbatched" else texts[: args.unbatched_texts]
                    rates[name].append(await drain_rate(settings, batch, f"round{n}-{name}"))
                print(
                    f"round {n}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()),
                    file=sys.stderr,
                )
            rates.update(await two_worker_rates(setups, workers, texts, args.rounds))
        finally:
            for w in workers.values():
                w.stop()
        med = {k: statistics.median(v) for k, v in rates.items()}
        half = med["onnx"] / 2
        steady = [texts[i % len(texts)] for i in range(int(half * args.latency_seconds))]
        latency: dict[str, Any] = {}
        for name in ("onnx", "triton"):
            (logs / f"latency-{name}").mkdir()
            backend = setups[name].model_dump(include={"backend", "triton_url"})
            latency[name] = await bench_latency(
                fresh_topics(base, broker).model_copy(update=backend),
                steady,
                half,
                args.warm_seconds,
                logs / f"latency-{name}",
            )
    print(
        json.dumps(
            {
                "texts": len(texts),
                "rounds": args.rounds,
                "model": f"{model.name}/{model.version} (int8)",
                "raw_model_msgs_per_s": round(med["raw"], 1),
                "inprocess_msgs_per_s": round(med["onnx"], 1),
                "triton_msgs_per_s": round(med["triton"], 1),
                "triton_unbatched_msgs_per_s": round(med["triton_unbatched"], 1),
                "ratio_triton_vs_raw": round(med["triton"] / med["raw"], 3),
                "ratio_triton_vs_inprocess": round(med["triton"] / med["onnx"], 3),
                "ratio_inprocess_vs_raw": round(med["onnx"] / med["raw"], 3),
                "microbatching_gain_triton": round(med["triton"] / med["triton_unbatched"], 2),
                "inprocess_2_workers_msgs_per_s": round(med["onnx_2"], 1),
                "triton_2_workers_msgs_per_s": round(med["triton_2"], 1),
                "ratio_inprocess_2_vs_1_workers": round(med["onnx_2"] / med["onnx"], 3),
                "ratio_triton_2_vs_1_workers": round(med["triton_2"] / med["triton"], 3),
                "ratio_triton_vs_inprocess_2_workers": round(med["triton_2"] / med["onnx_2"], 3),
                "latency_rate_msgs_per_s": round(half, 1),
                "latency_warm_ms_inprocess": [latency["onnx"][k] for k in WARM],
                "latency_warm_ms_triton": [latency["triton"][k] for k in WARM],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
