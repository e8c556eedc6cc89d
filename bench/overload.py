"""Overload: one worker offered twice what it can do, then left to drain its backlog.

1. capacity: a warmed-up worker process (in-process ONNX) drains bursts of TweetEval test
   tweets (bench/throughput.py's `drain_rate`: end of publication to last acknowledged output);
   the median of the rounds is its capacity
2. overload: the same worker is offered `--factor` times that rate for `--seconds`, while
   its consumer lag (end offsets minus the group's committed offsets) and its RSS
   (VmRSS of /proc/<pid>/status) are sampled every second
3. drain: publishing stops; the time until the group's commits cover every published
   record is the drain time; then an audit of the outputs and dead letters counts losses

Prints capacity, offered rate, peak lag, RSS at the start of the overload and its maximum,
drain time and lost inputs, then one JSON line. Memory must stay flat while the lag grows:
the worker takes at most max_batch records per poll and the consumer buffers at most one
fetch per partition. Run alone: two CPU-heavy jobs at once distort every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.throughput import as_records, drain_rate, fresh_topics, load_texts  # noqa: E402
from streams.classify.processes import WorkerProcesses  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.clients import kafka_client_options  # noqa: E402
from streams.kafka.publish import publish  # noqa: E402
from streams.kafka.topics import ensure_topics, pipeline_topics  # noqa: E402
from streams.learning.training import ensure_model  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402
from streams.testing.audit import audit_outputs  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class LagProbe:
    """The group's committed offsets and the input topic's end offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin = AIOKafkaAdminClient(**kafka_client_options(settings))
        self.consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None)
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        await self.consumer.topics()
        topic = self.settings.input_topic
        found = self.consumer.partitions_for_topic(topic) or ()
        self.partitions = [TopicPartition(topic, p) for p in sorted(found)]

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def committed(self) -> dict[int, int]:
        offsets = await self.admin.list_consumer_group_offsets(
            self.settings.group_id, partitions=self.partitions
        )
        return {tp.partition: max(0, meta.offset) for tp, meta in offsets.items()}

    async def lag(self) -> int:
        """End offsets minus committed (approximate on Tansu: its end offsets can be off
        by up to a record batch)."""
        ends = await self.consumer.end_offsets(self.partitions)
        committed = await self.committed()
        return sum(max(0, end - committed.get(tp.partition, 0)) for tp, end in ends.items())


class Sampler:
    """Once a second: lag and the worker's RSS, with the phase it was taken in."""

    def __init__(self, probe: LagProbe, pid: int) -> None:
        self.probe = probe
        self.pid = pid
        self.phase = "overload"
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()

    async def run(self) -> None:
        while True:
            sample = {
                "t": round(time.monotonic() - self.started, 1),
                "phase": self.phase,
                "lag": await self.probe.lag(),
                "rss_mb": round(rss_mb(self.pid), 1),
            }
            self.samples.append(sample)
            if len(self.samples) % 10 == 1:
                print(
                    f"t+{sample['t']:5.0f}s {sample['phase']:8s} lag {sample['lag']:6d}"
                    f"  rss {sample['rss_mb']:6.1f} MiB",
                    file=sys.stderr,
                )
            await asyncio.sleep(1)


async def wait_drained(probe: LagProbe, targets: dict[int, int], timeout_s: float) -> float:
    """Wait until the group's commits reach `targets` (partition -> next offset); the
    time it took. Exact, unlike end offsets on this broker."""
    started = time.monotonic()
    while True:
        committed = await probe.committed()
        if all(committed.get(p, 0) >= end for p, end in targets.items()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"backlog not drained after {timeout_s:.0f}s: {committed}")
        await asyncio.sleep(0.2)


@dataclass
class Overload:
    """What the overload and drain phases measured."""

    offered: float
    count: int
    positions: list[tuple[int, int]]
    published_s: float
    drain_s: float
    rss_start: float
    samples: list[dict[str, Any]]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Capacity, then the overload and its drain on one worker: the figures and samples."""
    settings = load_settings(metrics_port=0)
    model = ensure_model(settings)
    logs = Path(tempfile.mkdtemp(prefix="feedpulse-overload-"))
    texts = load_texts(args.capacity_texts)
    print(
        f"model {model.name}/{model.version} ({settings.model_variant}), "
        f"max_batch {settings.max_batch}; logs in {logs}",
        file=sys.stderr,
    )
    with EmbeddedBroker() as broker:
        s = fresh_topics(settings, broker)
        await ensure_topics(s, pipeline_topics(s))
        workers = WorkerProcesses(s, logs)
        workers.start(1)
        pid = workers.procs[0].pid
        try:
            await workers.wait_ready()
            rates = await capacity_rounds(s, texts, args.rounds)
            capacity = args.capacity or statistics.median(rates)
            offered = args.factor * capacity
            over = await overload(s, pid, offered, args)
            rss_after = rss_mb(pid)
            audit_began = time.monotonic()
            audit = await audit_outputs(
                s, over.positions, by="position", timeout_s=args.audit_timeout
            )
            audit_s = time.monotonic() - audit_began
            alive = workers.procs[0].poll() is None
        finally:
            codes = workers.stop()
    return {
        "capacity_msgs_per_s": round(capacity, 1),
        "capacity_rounds": [round(r, 1) for r in rates],
        **overload_figures(over, rss_after),
        "lost": len(audit.missing(over.positions, "position")),
        "duplicates": audit.duplicates(),
        "outputs_read": sum(audit.labeled_at.values()) + sum(audit.dead_lettered_at.values()),
        "audit_seconds": round(audit_s, 1),
        "worker_alive_at_end": alive,
        "worker_exit_code": codes[0],
        "samples": over.samples,
    }


async def capacity_rounds(s: Settings, texts: list[str], rounds: int) -> list[float]:
    """After a warm-up burst, the worker's drain rate in each of `rounds` bursts of `texts`."""
    await drain_rate(s, texts[:500], "warm")
    rates = []
    for n in range(rounds):
        rates.append(await drain_rate(s, texts, f"cap{n}"))
        print(f"capacity round {n}: {rates[-1]:.1f} msgs/s", file=sys.stderr)
    return rates


async def overload(s: Settings, pid: int, offered: float, args: argparse.Namespace) -> Overload:
    """Offer `offered` msgs/s for `args.seconds`, then wait for the drain, sampling throughout."""
    everything = load_texts(100_000)
    count = int(offered * args.seconds)
    records = as_records([everything[i % len(everything)] for i in range(count)], "over")
    probe = LagProbe(s)
    await probe.start()
    sampler = Sampler(probe, pid)
    rss_start = rss_mb(pid)
    sampling = asyncio.create_task(sampler.run())
    try:
        print(f"offering {offered:.0f} msgs/s for {args.seconds:.0f}s", file=sys.stderr)
        began = time.monotonic()
        positions = await publish(s, records, rate=offered)
        published_s = time.monotonic() - began
        sampler.phase = "drain"
        targets: dict[int, int] = {}
        for p, offset in positions:
            targets[p] = max(targets.get(p, 0), offset + 1)
        drain_s = await wait_drained(probe, targets, args.drain_timeout)
        sampler.phase = "drained"
        await asyncio.sleep(3)  # a few samples of the idle worker after the drain
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        await probe.stop()
    return Overload(offered, count, positions, published_s, drain_s, rss_start, sampler.samples)


def overload_figures(over: Overload, rss_after: float) -> dict[str, Any]:
    """Offered rate, peak lag, RSS through the overload and drain time."""
    during = [x for x in over.samples if x["phase"] == "overload"]
    allrss = [x["rss_mb"] for x in over.samples]
    peak = max(over.samples, key=lambda x: x["lag"])
    half = len(during) // 2
    return {
        "offered_msgs_per_s": round(over.count / over.published_s, 1),
        "offered_target_msgs_per_s": round(over.offered, 1),
        "overload_seconds": round(over.published_s, 1),
        "published": len(over.positions),
        "peak_lag": peak["lag"],
        "peak_lag_at_s": peak["t"],
        "rss_mb_start": round(over.rss_start, 1),
        "rss_mb_max": max([over.rss_start, *allrss]),
        "rss_mb_first_half_max": max((x["rss_mb"] for x in during[:half]), default=None),
        "rss_mb_second_half_max": max((x["rss_mb"] for x in during[half:]), default=None),
        "rss_mb_after_drain": round(rss_after, 1),
        "drain_seconds": round(over.drain_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="overload duration")
    parser.add_argument("--factor", type=float, default=2.0, help="offered rate / capacity")
    parser.add_argument("--capacity-texts", type=int, default=2000, help="burst per round")
    parser.add_argument("--rounds", type=int, default=3, help="capacity rounds (median)")
    parser.add_argument("--capacity", type=float, default=0.0, help="skip measuring: msgs/s")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--audit-timeout", type=float, default=300.0)
    parser.add_argument("--samples", action="store_true", help="keep per-second samples")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    samples = result.pop("samples")
    print(
        f"capacity {result['capacity_msgs_per_s']} msgs/s; offered "
        f"{result['offered_msgs_per_s']} msgs/s for {result['overload_seconds']} s "
        f"({result['published']} msgs); peak lag {result['peak_lag']}; RSS "
        f"{result['rss_mb_start']} MiB at start, max {result['rss_mb_max']} MiB "
        f"(overload halves: {result['rss_mb_first_half_max']} / "
        f"{result['rss_mb_second_half_max']}), {result['rss_mb_after_drain']} after the drain; "
        f"drain {result['drain_seconds']} s; lost {result['lost']}; "
        f"duplicates {result['duplicates']}",
        file=sys.stderr,
    )
    if args.samples:
        result["samples"] = samples
    print(json.dumps(result))
    if result["lost"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
