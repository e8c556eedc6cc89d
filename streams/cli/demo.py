"""`feedpulse demo`: embedded broker + default model + K workers + a sample feed, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from serving.model_store import ModelVersion
from streams.classify.backend import local_triton
from streams.classify.processes import WorkerProcesses
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.publish import Record, publish
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.learning.training import ensure_model
from streams.settings import Settings
from streams.testing.audit import Audit, Position, audit_outputs, percentile

# Every kind of bad input, mixed into the demo feed so the dead-letter path shows too.
BAD_INPUTS: tuple[bytes, ...] = (
    b"\xff\xfe\x00not utf-8",
    b'{"id": "%s", "text": ',
    b'{"id": "%s", "source": "social"}',
    b'{"id": "%s", "text": 42}',
    b'{"id": "%s", "text": "   "}',
)
BAD_EVERY = 40


def sample_feed_path() -> Path:
    """The sample feed the project ships for the demo."""
    return Path(str(resources.files("streams") / "samples" / "demo_feed.jsonl"))


def demo_records(count: int) -> list[Record]:
    """`count` records cycling through the sample feed, with a bad one every BAD_EVERY."""
    rows = [
        json.loads(line) for line in sample_feed_path().read_text().splitlines() if line.strip()
    ]
    records: list[Record] = []
    bad = itertools.cycle(BAD_INPUTS)
    good = itertools.cycle(rows)
    for n in range(count):
        item_id = f"demo-{n:06d}"
        if n % BAD_EVERY == BAD_EVERY - 1:
            template = next(bad)
            value = template.replace(b"%s", item_id.encode()) if b"%s" in template else template
            records.append((item_id.encode(), value))
        else:
            row = dict(next(good))
            row["id"] = item_id
            records.append((item_id.encode(), json.dumps(row, ensure_ascii=False).encode()))
    return records


def test_figures(version: ModelVersion, variant: str) -> dict[str, dict[str, float]]:
    """`version`'s figures on each test split, as `variant` serves them (from its manifest;
    empty for a version nothing tested, such as seed heads)."""
    test = version.manifest.get("evaluation", {}).get("test", {})
    suffix = f"/{variant}"
    return {
        name.removesuffix(suffix): {k: round(v, 4) for k, v in figures.items() if k != "rows"}
        for name, figures in test.items()
        if name.endswith(suffix)
    }


def summarize(
    audit: Audit,
    positions: list[Position],
    published_at: float,
    model: str,
    model_test: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The one-line JSON summary of a run, accounting each input by its position, with the
    served model's measured test figures."""
    wanted = set(positions)
    labeled = len(set(audit.labeled_at) & wanted)
    dead = len(set(audit.dead_lettered_at) & wanted - set(audit.labeled_at))
    elapsed = ((audit.last_output_ms or 0) / 1000 - published_at) if audit.last_output_ms else 0.0
    p50 = percentile(audit.latencies_ms, 50)
    p99 = percentile(audit.latencies_ms, 99)
    return {
        "published": len(positions),
        "labeled": labeled,
        "dead_lettered": dead,
        "lost": len(positions) - labeled - dead,
        "duplicates": audit.duplicates(),
        "throughput_msgs_per_s": round((labeled + dead) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms_p50": round(p50, 1) if p50 is not None else None,
        "latency_ms_p99": round(p99, 1) if p99 is not None else None,
        "model": model,
        "model_test": model_test or {},
    }


def _answer(part: dict[str, Any]) -> str:
    """A head's answer for the live table: its label and score, or a multi-label head's
    labels (or "-" for none)."""
    if "labels" in part:
        return ", ".join(part["labels"]) or "-"
    colour = {"negative": "red", "positive": "green"}.get(part["label"], "yellow")
    return f"[{colour}]{part['label']}[/] {part['score']:.2f}"


def _live_view(audit: Audit, progress: Progress, task: Any) -> Group:
    table = Table(title="latest labeled items", expand=True, show_lines=False)
    table.add_column("id", no_wrap=True)
    docs = audit.samples[-8:]
    heads = list(docs[-1]["labels"]) if docs else ["sentiment", "topic"]
    for head in heads:
        table.add_column(head, no_wrap=True)
    table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1)
    for doc in docs:
        answers = [_answer(doc["labels"][h]) if h in doc["labels"] else "" for h in heads]
        table.add_row(doc["id"], *answers, doc["text"])
    progress.update(
        task,
        completed=len(audit.accounted()),
        description=f"labeled {len(audit.labeled)}  dead-lettered {len(audit.dead_lettered)}",
    )
    return Group(table, progress)


async def run_demo(
    settings: Settings, *, count: int, workers: int, rate: float, console: Console
) -> dict[str, Any]:
    """Run the whole pipeline on the embedded broker and return the summary."""
    model = ensure_model(settings, console)
    model_label = f"{model.name}/{model.version} ({settings.model_variant})"
    quality = test_figures(model, settings.model_variant)
    console.print(f"serving {model_label}; {_quality_line(quality)}")

    logs = Path(tempfile.mkdtemp(prefix="feedpulse-demo-"))
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker(log_path=logs / "broker.log"))
        settings = settings.model_copy(
            update={"bootstrap_servers": broker.bootstrap_servers, "metrics_port": 0}
        )
        console.print(f"embedded broker on {broker.bootstrap_servers} (logs in {logs})")
        if settings.backend == "triton":
            settings = settings.model_copy(
                update={
                    "triton_http_port": free_port(),
                    "triton_grpc_port": free_port(),
                    "triton_metrics_port": free_port(),
                }
            )
            with console.status("starting Triton and loading the model"):
                triton = stack.enter_context(local_triton(settings, logs / "triton.log"))
            settings = settings.model_copy(update={"triton_url": triton.grpc_url})
            console.print(f"Triton serving on {triton.grpc_url}")
            model_label = f"{model.name}/{model.version} (triton)"
        await ensure_topics(settings, pipeline_topics(settings))
        procs = WorkerProcesses(settings, logs)
        procs.start(workers)
        try:
            with console.status(f"starting {workers} worker(s) and joining the consumer group"):
                await procs.wait_ready()
            records = demo_records(count)
            progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console
            )
            task = progress.add_task("waiting for the first labels", total=count)
            with Live(console=console, refresh_per_second=8, transient=False) as live:

                def view(audit: Audit, _rec: Any = None) -> None:
                    live.update(_live_view(audit, progress, task))

                published_at = time.time()
                publishing = asyncio.ensure_future(publish(settings, records, rate=rate))
                audit = await audit_outputs(
                    settings, publishing, by="position", timeout_s=120 + count / 20, on_record=view
                )
                positions = await publishing
                view(audit)
            console.line()  # keep the summary line on stdout apart from the live view
        finally:
            if any(code != 0 for code in procs.stop()):
                console.print(f"[red]a worker exited uncleanly; see {logs}[/]")
    served = audit.models.most_common(1)[0][0] if audit.models else model_label
    return summarize(audit, positions, published_at, served, quality)


def _quality_line(quality: dict[str, dict[str, float]]) -> str:
    if not quality:
        return "no test figures (seed heads; `feedpulse train` measures a trained model)"
    parts = [
        f"{name}: accuracy {f['accuracy']:.3f}, macro recall {f['macro_recall']:.3f}"
        if "macro_recall" in f
        else f"{name}: macro-F1 {f.get('macro_f1', 0.0):.3f}"
        for name, f in quality.items()
    ]
    return "measured on the test splits: " + "; ".join(parts)
