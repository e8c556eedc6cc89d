"""Throughput benchmark, five ways on the same real texts, in one run.

(a) raw model ceiling: the in-process backend on pre-tokenized micro-batches, tight loop
(b) feedpulse end to end: a burst fills the input topic of a running worker; time the
    drain from the end of the burst's publication to the last acknowledged output, the
    harness idle meanwhile (also reported from the worker's first fetch); then p50/p99
    latency at half that load. (a) and (b) alternate over several rounds; medians are
    reported.
(c) naive peer: a consumer that classifies one message at a time with a transformers
    pipeline (same encoder and heads, PyTorch) and produces each result
(d) faust peer, transformers: a faust-streaming agent taking micro-batches
    (`stream.take(32, within=0.05)`) into a batched transformers encoder, same heads
(e) faust peer, ONNX Runtime: the same agent calling the graph feedpulse serves
    (bench/faust_peer.py)
Latency at half of (b)'s rate, warm and cold apart: a worker is started as a steady stream
begins; cold is the seconds from its start to its first output and the p99 of what it
labels in its first 10 s, warm is p50/p99 of what was published after `--warm-seconds`.

Prints one JSON line with the throughputs and the ratios (b)/(a), (b)/(c), (b)/(d), (b)/(e).
Run alone: two CPU-heavy jobs at once distort every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.backends.onnx import OnnxClassifier  # noqa: E402
from serving.child_process import spawn, terminate  # noqa: E402
from serving.model_store import ModelVersion  # noqa: E402
from streams.classify.processes import WorkerProcesses  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.clients import kafka_client_options  # noqa: E402
from streams.kafka.publish import Record, publish  # noqa: E402
from streams.kafka.tail import read_topics  # noqa: E402
from streams.kafka.topics import ensure_topics, pipeline_topics  # noqa: E402
from streams.learning.training import ensure_model  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402
from streams.testing.audit import audit_outputs, percentile  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tweeteval_sentiment" / "test.jsonl"


def load_texts(n: int) -> list[str]:
    """The first `n` TweetEval test tweets (real, varied-length social posts)."""
    texts = []
    with DATA.open(encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return texts


def rounded(ms: float | None) -> float | None:
    """Milliseconds to one decimal (None stays None: no data)."""
    return None if ms is None else round(ms, 1)


def as_records(texts: list[str], tag: str) -> list[Record]:
    return [
        (f"{tag}-{i}".encode(), json.dumps({"id": f"{tag}-{i}", "text": t}).encode())
        for i, t in enumerate(texts)
    ]


class RawCeiling:
    """(a) the backend alone on pre-tokenized micro-batches, in stream order."""

    def __init__(self, model: ModelVersion, texts: list[str], settings: Settings) -> None:
        self.clf = OnnxClassifier(
            model, variant=settings.model_variant, chunk_size=settings.inference_chunk
        )
        size = settings.max_batch
        self.batches = [self.clf.encode(texts[i : i + size]) for i in range(0, len(texts), size)]
        self.count = len(texts)
        self.one_pass()  # warm-up: ONNX Runtime allocates per new input shape

    def one_pass(self) -> float:
        """Texts/s over one pass."""
        started = time.perf_counter()
        for tokens in self.batches:
            self.clf.run_tokenized(tokens)
        return self.count / (time.perf_counter() - started)


def fresh_topics(settings: Settings, broker: EmbeddedBroker) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "bootstrap_servers": broker.bootstrap_servers,
            "input_topic": f"bench-raw-{tag}",
            "output_topic": f"bench-labeled-{tag}",
            "dlq_topic": f"bench-dlq-{tag}",
            "group_id": f"bench-{tag}",
            "metrics_port": 0,
        }
    )


@dataclass(frozen=True)
class Drain:
    """One burst drained: msgs/s over the window the harness stayed idle (from the end of
    the burst's publication to the last acknowledged output), and from the worker's first
    fetch of the burst (a window the publishing harness shares the cores with)."""

    rate: float
    rate_from_first_fetch: float


async def committed(settings: Settings, consumer: AIOKafkaConsumer) -> int:
    """Input records the worker group has committed, over all partitions (a worker commits
    a batch only once its outputs are acknowledged; Tansu's end offsets lag behind)."""
    total = 0
    for tp in consumer.assignment():
        total += max(0, await consumer.committed(tp) or 0)
    return total


def group_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer that reads the worker group's committed offsets of the input topic,
    never joining the group (manual assignment) and never fetching a record."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), group_id=settings.group_id, enable_auto_commit=False
    )
    consumer.assign(
        [TopicPartition(settings.input_topic, p) for p in range(settings.topic_partitions)]
    )
    consumer.pause(*consumer.assignment())
    return consumer


async def drain(settings: Settings, texts: list[str], tag: str) -> Drain:
    """(b) publish `texts` in one burst to a running worker and time its drain.

    While the worker drains, the harness only asks for the group's committed offsets every
    200 ms; the outputs are read and parsed once all are there, so the harness never takes
    the worker's cores in the timed window."""
    consumer = group_reader(settings)
    await consumer.start()
    try:
        base = await committed(settings, consumer)
        await publish(settings, as_records(texts, tag))
        published = time.time()
        deadline = time.monotonic() + 120 + len(texts) / 20
        while await committed(settings, consumer) < base + len(texts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tag}: the worker did not label {len(texts)} texts in time")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    first_consumed, outputs = float("inf"), {}
    async for rec in read_topics(settings, [settings.output_topic]):
        doc = json.loads(rec.value)
        if doc["id"].startswith(f"{tag}-"):
            outputs[doc["id"]] = rec.timestamp / 1000
            first_consumed = min(first_consumed, doc["timestamps"]["consumed"])
            if len(outputs) == len(texts):
                break
    last = max(outputs.values())
    after = sum(1 for t in outputs.values() if t > published)
    return Drain(after / (last - published), len(texts) / (last - first_consumed))


async def drain_rate(settings: Settings, texts: list[str], tag: str) -> float:
    """msgs/s of a running worker draining a burst of `texts` (see `drain`)."""
    return (await drain(settings, texts, tag)).rate


async def bench_side_by_side(
    settings: Settings, model: ModelVersion, texts: list[str], rounds: int, logs: Path
) -> tuple[list[float], list[Drain]]:
    """Alternate (a) and (b) rounds, both warmed up, so machine noise hits both alike."""
    await ensure_topics(settings, pipeline_topics(settings))
    raw = RawCeiling(model, texts, settings)
    workers = WorkerProcesses(settings, logs)
    workers.start(1)
    raw_rates: list[float] = []
    drains: list[Drain] = []
    try:
        await workers.wait_ready()
        await drain(settings, texts, "warm")
        for n in range(rounds):
            raw_rates.append(raw.one_pass())
            drains.append(await drain(settings, texts, f"round{n}"))
            print(
                f"round {n}: (a) {raw_rates[-1]:.1f}  (b) {drains[-1].rate:.1f} msgs/s "
                f"({drains[-1].rate_from_first_fetch:.1f} from the first fetch)",
                file=sys.stderr,
            )
    finally:
        workers.stop()
    return raw_rates, drains


async def bench_latency(
    settings: Settings, texts: list[str], rate: float, warm_s: float, logs: Path
) -> dict[str, Any]:
    """Latency (input timestamp to output timestamp) of a worker started as a steady stream
    at `rate` begins: cold (its first output, its first 10 s) and warm (after `warm_s`)."""
    await ensure_topics(settings, pipeline_topics(settings))
    seen: list[tuple[float, float]] = []  # (published, labeled), Unix seconds

    def note(_: Any, rec: Any) -> None:
        if rec.topic == settings.output_topic:
            published = json.loads(rec.value)["input"]["timestamp_ms"]
            seen.append((published / 1000, rec.timestamp / 1000))

    workers = WorkerProcesses(settings, logs)
    started = time.time()
    workers.start(1)
    try:
        sending = asyncio.ensure_future(publish(settings, as_records(texts, "steady"), rate=rate))
        await audit_outputs(settings, sending, by="position", timeout_s=600, on_record=note)
    finally:
        workers.stop()
    first = min(labeled for _, labeled in seen)
    cold = [1000 * (out - inp) for inp, out in seen if out <= first + 10]
    warm = [1000 * (out - inp) for inp, out in seen if inp >= started + warm_s]
    return {
        "rate": rate,
        "seconds_to_first_output": round(first - started, 2),
        "cold_p99_ms_first_10s": percentile(cold, 99),
        "warm_p50_ms": percentile(warm, 50),
        "warm_p99_ms": percentile(warm, 99),
        "warm_n": len(warm),
    }


async def bench_faust_peer(
    settings: Settings, texts: list[str], model: ModelVersion, backend: str, logs: Path
) -> float:
    """(d) or (e): the faust peer on `backend`, warmed up, then one drain of `texts`."""
    await ensure_topics(settings, pipeline_topics(settings))
    script = REPO / "bench" / "faust_peer.py"
    args = [model.path, settings.bootstrap_servers, settings.input_topic, settings.output_topic]
    peer = spawn(
        [sys.executable, str(script), backend, *map(str, args), settings.group_id],
        logs / f"faust-peer-{backend}.log",
        {**os.environ, "APP_DATADIR": str(logs / f"faust-{backend}")},
    )
    try:
        await drain_rate(settings, texts[:64], f"{backend}-warm")  # joins, loads, warms
        return await drain_rate(settings, texts, f"{backend}-run")
    finally:
        terminate(peer, timeout_s=30)


async def bench_naive(settings: Settings, texts: list[str], model: ModelVersion) -> dict[str, Any]:
    """(c) the peer most people would write: one message, one pipeline call, one produce."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from transformers import pipeline

    from serving.backends.contract import softmax

    await ensure_topics(settings, pipeline_topics(settings))
    await publish(settings, as_records(texts, "naive"))
    extractor = pipeline("feature-extraction", model=model.manifest["base_checkpoint"])
    heads = np.load(model.heads_path)
    tasks = model.tasks
    consumer = AIOKafkaConsumer(
        settings.input_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    done = 0
    started: float | None = None
    try:
        async for msg in consumer:
            if started is None:
                started = time.perf_counter()
            doc = json.loads(msg.value)
            tokens = np.asarray(extractor(doc["text"])[0], dtype=np.float32)
            emb = tokens.mean(axis=0)
            emb /= np.linalg.norm(emb)
            labels = {}
            for task in tasks:
                logits = heads[f"{task.name}.weight"] @ emb + heads[f"{task.name}.bias"]
                probs = softmax(logits[None, :].astype(np.float32))[0]
                labels[task.name] = task.labels[int(probs.argmax())]
            out = json.dumps({"id": doc["id"], "labels": labels}).encode()
            await producer.send_and_wait(settings.output_topic, out, key=msg.key)
            done += 1
            if done == len(texts):
                break
    finally:
        await consumer.stop()
        await producer.stop()
    assert started is not None
    return {"msgs_per_s": done / (time.perf_counter() - started)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="messages per round of (a), (b)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of (a) and (b)")
    parser.add_argument("--naive-texts", type=int, default=600, help="messages for (c)")
    parser.add_argument("--latency-seconds", type=float, default=40.0)
    parser.add_argument("--warm-seconds", type=float, default=15.0)
    parser.add_argument("--peer-texts", type=int, default=1000, help="messages for (d), (e)")
    args = parser.parse_args()

    settings = load_settings(metrics_port=0)
    model = ensure_model(settings)
    texts = load_texts(args.texts)
    logs = Path(tempfile.mkdtemp(prefix="feedpulse-bench-"))
    print(
        f"model {model.name}/{model.version} ({settings.model_variant}); logs in {logs}",
        file=sys.stderr,
    )

    with EmbeddedBroker() as broker:
        raw_rates, drains = await bench_side_by_side(
            fresh_topics(settings, broker), model, texts, args.rounds, logs
        )
        e2e_rates = [d.rate for d in drains]
        raw, e2e = statistics.median(raw_rates), statistics.median(e2e_rates)
        from_fetch = statistics.median(d.rate_from_first_fetch for d in drains)
        naive = await bench_naive(fresh_topics(settings, broker), texts[: args.naive_texts], model)
        print(f"(c) naive peer: {naive['msgs_per_s']:.1f} msgs/s", file=sys.stderr)
        peers = {}
        for backend in ("transformers", "onnx"):
            peer_texts = texts[: args.peer_texts]
            peers[backend] = await bench_faust_peer(
                fresh_topics(settings, broker), peer_texts, model, backend, logs
            )
            print(f"faust peer ({backend}): {peers[backend]:.1f} msgs/s", file=sys.stderr)
        half = e2e / 2
        steady = [texts[i % len(texts)] for i in range(int(half * args.latency_seconds))]
        latency = await bench_latency(
            fresh_topics(settings, broker), steady, half, args.warm_seconds, logs
        )
    # One batch waits at most max_wait_ms to fill, then takes max_batch / raw to classify.
    batch_ms = settings.max_wait_ms + 1000 * settings.max_batch / raw
    print(
        json.dumps(
            {
                "texts": len(texts),
                "model": f"{model.name}/{model.version} ({settings.model_variant})",
                "max_batch": settings.max_batch,
                "inference_chunk": settings.inference_chunk,
                "rounds": args.rounds,
                "raw_model_msgs_per_s": round(raw, 1),
                "feedpulse_msgs_per_s": round(e2e, 1),
                "feedpulse_msgs_per_s_from_first_fetch": round(from_fetch, 1),
                "naive_peer_msgs_per_s": round(naive["msgs_per_s"], 1),
                "faust_transformers_peer_msgs_per_s": round(peers["transformers"], 1),
                "faust_onnx_peer_msgs_per_s": round(peers["onnx"], 1),
                "ratio_feedpulse_vs_raw": round(e2e / raw, 3),
                "ratio_feedpulse_vs_raw_per_round": [
                    round(b / a, 3) for a, b in zip(raw_rates, e2e_rates, strict=True)
                ],
                "ratio_feedpulse_vs_raw_from_first_fetch": round(from_fetch / raw, 3),
                "ratio_feedpulse_vs_naive": round(e2e / naive["msgs_per_s"], 2),
                "ratio_feedpulse_vs_faust_transformers": round(e2e / peers["transformers"], 2),
                "ratio_feedpulse_vs_faust_onnx": round(e2e / peers["onnx"], 2),
                "half_load_msgs_per_s": round(half, 1),
                "latency_warm_ms_p50": rounded(latency["warm_p50_ms"]),
                "latency_warm_ms_p99": rounded(latency["warm_p99_ms"]),
                "latency_warm_p99_goal_ms": round(2 * batch_ms, 1),
                "cold_seconds_to_first_output": latency["seconds_to_first_output"],
                "cold_ms_p99_first_10s": rounded(latency["cold_p99_ms_first_10s"]),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
