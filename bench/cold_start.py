"""Cold start under load: a worker joining a group that is already busy, with and without
the warm-up, side by side in one run.

A warmed worker serves a steady stream at `--rate` msgs/s on a real broker; a second worker
then joins (a scale-out). Per joiner: seconds from process start to `/ready` answering 200,
seconds to its first output, and p50/p99 latency (input timestamp to output timestamp) of
what it labeled in its first 10 s. Rounds alternate warm-up on (`warmup_batches` as set)
and off (0), so machine noise hits both alike.

Prints one JSON line. Run alone: two CPU-heavy jobs at once distort every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.classify.processes import WorkerProcesses  # noqa: E402
from streams.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.kafka.publish import Record, publish  # noqa: E402
from streams.kafka.tail import read_topics  # noqa: E402
from streams.kafka.topics import ensure_topics, pipeline_topics  # noqa: E402
from streams.learning.training import ensure_model  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402
from streams.testing.audit import percentile  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tweeteval_sentiment" / "test.jsonl"
FIRST_S = 10.0


def texts() -> list[str]:
    """TweetEval test tweets: real, varied-length posts."""
    with DATA.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def ready_now(port: int) -> bool:
    """Whether the worker's /ready answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def joiner_round(
    base: Settings, broker: EmbeddedBroker, rate: float, warmup: int, logs: Path
) -> dict[str, Any]:
    """One round: a warmed worker under load, then a joiner; the joiner's figures."""
    tag = uuid.uuid4().hex[:6]
    s = base.model_copy(
        update={
            "bootstrap_servers": broker.bootstrap_servers,
            "input_topic": f"cold-raw-{tag}",
            "output_topic": f"cold-labeled-{tag}",
            "dlq_topic": f"cold-dlq-{tag}",
            "group_id": f"cold-{tag}",
            "metrics_port": 0,
        }
    )
    await ensure_topics(s, pipeline_topics(s))
    first = WorkerProcesses(s, logs / f"{tag}-first")
    (logs / f"{tag}-first").mkdir()
    (logs / f"{tag}-joiner").mkdir()
    port = free_port()
    joiner = WorkerProcesses(
        s.model_copy(update={"metrics_port": port, "warmup_batches": warmup}),
        logs / f"{tag}-joiner",
    )
    pool = texts()
    stop = asyncio.Event()

    def stream() -> Iterator[Record]:
        n = 0
        while not stop.is_set():
            doc = {"id": f"{tag}-{n}", "text": pool[n % len(pool)]}
            yield f"{tag}-{n}".encode(), json.dumps(doc).encode()
            n += 1

    first.start(1)
    try:
        await first.wait_ready()
        publishing = asyncio.create_task(publish(s, stream(), rate=rate))
        await asyncio.sleep(8)  # the first worker settles into the load
        started = time.time()
        joiner.start(1)
        ready_at = None
        while ready_at is None and time.time() - started < 120:
            if await asyncio.to_thread(ready_now, port):
                ready_at = time.time()
            else:
                await asyncio.sleep(0.05)
        await asyncio.sleep(FIRST_S + 5)
        stop.set()
        await publishing
    finally:
        stop.set()
        joiner.stop()
        first.stop()
    pid = str(joiner.procs[0].pid)
    outputs: list[tuple[float, float]] = []  # (output s, latency ms) of the joiner's outputs
    async for rec in read_topics(s, [s.output_topic], idle_timeout_s=3):
        doc = json.loads(rec.value)
        if doc["worker"].rsplit("-", 2)[1] == pid:
            outputs.append((rec.timestamp / 1000, rec.timestamp - doc["input"]["timestamp_ms"]))
    outputs.sort()
    first_out = outputs[0][0] if outputs else None
    window = [lat for at, lat in outputs if first_out is not None and at - first_out <= FIRST_S]
    return {
        "warmup_batches": warmup,
        "seconds_to_ready": round(ready_at - started, 2) if ready_at else None,
        "seconds_to_first_output": round(first_out - started, 2) if first_out else None,
        "first_10s_items": len(window),
        "first_10s_p50_ms": percentile(window, 50),
        "first_10s_p99_ms": percentile(window, 99),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="msgs/s offered throughout")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each (on, off)")
    args = parser.parse_args()
    settings = load_settings(metrics_port=0)
    ensure_model(settings)
    logs = Path(tempfile.mkdtemp(prefix="feedpulse-cold-"))
    print(f"logs in {logs}", file=sys.stderr)
    rounds: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker:
        for n in range(args.rounds):
            for warmup in (settings.warmup_batches, 0):
                result = await joiner_round(settings, broker, args.rate, warmup, logs)
                print(f"round {n}: {result}", file=sys.stderr)
                rounds.append(result)

    def median(key: str, warmup: int) -> float | None:
        values = [r[key] for r in rounds if r["warmup_batches"] == warmup and r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    on, off = settings.warmup_batches, 0
    p99_on, p99_off = median("first_10s_p99_ms", on), median("first_10s_p99_ms", off)
    print(
        json.dumps(
            {
                "rate": args.rate,
                "rounds": rounds,
                "warmed_seconds_to_ready": median("seconds_to_ready", on),
                "warmed_first_10s_p99_ms": p99_on,
                "cold_seconds_to_ready": median("seconds_to_ready", off),
                "cold_first_10s_p99_ms": p99_off,
                "ratio_first_10s_p99_cold_vs_warmed": (
                    round(p99_off / p99_on, 2) if p99_on and p99_off else None
                ),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
