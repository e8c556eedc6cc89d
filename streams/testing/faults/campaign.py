"""The campaign: start the whole loop on a real broker and a real Triton, stream through a
seeded fault schedule with feedback and spike bursts, then audit everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from online.feedback import UNMATCHED_FEEDBACK
from serving.backends.onnx import OnnxClassifier
from serving.model_store import load_version, serving_version
from serving.triton.server import TritonServer
from streams.classify.processes import WorkerProcesses
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics, pipeline_topics
from streams.learning.trainer_worker import READY_MARKER as TRAINER_READY
from streams.learning.watch_worker import READY_MARKER as WATCH_READY
from streams.learning.watch_worker import watch_topics
from streams.messages import CLASSIFY_FAILED
from streams.settings import Settings
from streams.testing.audit import Audit, audit_outputs
from streams.testing.faults.checks import (
    Copy,
    VersionTimeline,
    alert_item,
    attribute,
    burst_shares,
    bursts_alerted,
    copy_of,
    duplicates_by_kind,
    stale_versions,
    wrong_outcomes,
)
from streams.testing.faults.config import CampaignConfig, add_served_copy, campaign_settings
from streams.testing.faults.results import CampaignResult, audit_reasons, other_reasons
from streams.testing.faults.schedule import KINDS, Fault, Injector, Loop
from streams.testing.faults.services import Service
from streams.testing.faults.stream import CampaignStream, Position, StreamLog

KEYS = ("ticker:T0", "ticker:T1", "ticker:T2")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Dead letters that only an outage or a lost state could cause.
OUTAGE_REASONS = {CLASSIFY_FAILED, UNMATCHED_FEEDBACK}


def negative_texts(
    settings: Settings, tweets: list[tuple[str, str]], limit: int = 300
) -> list[str]:
    """The texts the served model labels negative most confidently: what a burst is made of
    (the most confident, so that a promoted version still labels them negative)."""
    model = load_version(settings.model_repository, settings.model_name)
    classifier = OnnxClassifier(model, variant="fp32", threads=1)
    texts = [t for t, label in tweets[:3000] if label == "negative"]
    scored: list[tuple[float, str]] = []
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        for text, pred in zip(chunk, classifier.classify_sync(chunk), strict=True):
            p = pred.tasks["sentiment"]
            if p.label == "negative" and p.score >= 0.6:
                scored.append((p.score, text))
    if len(scored) < 20:
        raise RuntimeError(f"only {len(scored)} confidently negative texts for the bursts")
    return [text for _, text in sorted(scored, reverse=True)[:limit]]


def scrape(port: int, name: str) -> float | None:
    """One unlabeled sample of a metric from a process's /metrics (None if absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            body = resp.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def sample_versions(
    settings: Settings, timeline: VersionTimeline, stop: asyncio.Event
) -> None:
    """Sample the served version four times a second until `stop`."""
    while not stop.is_set():
        version = await asyncio.to_thread(
            serving_version, settings.model_repository, settings.model_name
        )
        timeline.sample(time.time(), version)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def inject_bursts(
    stream: CampaignStream, config: CampaignConfig, rng: random.Random, stop: asyncio.Event
) -> None:
    """A negative burst on a rotating key every `burst_every_s`, after the alert warm-up."""
    warmup = (5 + 2) * config.alert_window_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), warmup)
    n = 0
    while not stop.is_set():
        await stream.burst(KEYS[n % len(KEYS)], config.burst_s)
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), config.burst_every_s * rng.uniform(0.8, 1.2))


async def read_all(settings: Settings, topic: str, idle_s: float = 3.0) -> list[dict[str, Any]]:
    """Every JSON record of `topic`."""
    return [
        json.loads(r.value) async for r in read_topics(settings, [topic], idle_timeout_s=idle_s)
    ]


class Campaign:
    """One run of the campaign in `work`; a copy of `repository` is its model repository."""

    def __init__(
        self,
        base: Settings,
        broker: EmbeddedBroker,
        work: Path,
        config: CampaignConfig,
        server: TritonServer,
        pool: ThreadPoolExecutor,
        progress: Callable[[str], None],
    ) -> None:
        self.config = config
        self.broker = broker
        self.server = server
        self.pool = pool
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.s = s = campaign_settings(base, config, server.grpc_url, work)
        self.timeline = VersionTimeline()
        self.workers = WorkerProcesses(s, work)
        self.services = {
            "watch": Service("watch", s, work, WATCH_READY),
            # One core for training: the other must keep the stream flowing.
            "trainer": Service("trainer", s, work, TRAINER_READY, env=ONE_THREAD),
            "alerts": Service("alerts", s, work, "alert worker:"),
        }
        self.seconds: dict[str, float] = {}
        self.started = time.monotonic()
        self.started_wall = time.time()  # bursts are stamped in wall-clock time
        self.injector: Injector | None = None

    async def start(self) -> None:
        """Topics, two classify workers, the watch, the trainer and the alert worker."""
        s = self.s
        await ensure_topics(s, sorted({*pipeline_topics(s), *watch_topics(s), s.alerts_topic}))
        self.workers.start(2)
        for service in self.services.values():
            service.start()
        await self.workers.wait_ready(timeout_s=180)
        for service in self.services.values():
            await service.wait_ready(timeout_s=180)
        self.seconds["start"] = time.monotonic() - self.started

    def _on_fault(self, fault: Fault) -> None:
        self.progress(
            f"t+{time.monotonic() - self.started:5.0f}s {KINDS[fault.kind]}: {fault.detail}"
        )

    def _report_unexplained(self, position: Position, first: Copy, again: Copy) -> None:
        """Say when and by whom an input was repeated that no fault explains."""
        self.progress(
            f"unexplained repeat of {position}: first t+{first.at - self.started_wall:.1f}s "
            f"(worker pid {first.worker_pid}), again t+{again.at - self.started_wall:.1f}s "
            f"(worker pid {again.worker_pid})"
        )

    async def stream_through_faults(
        self, tweets: list[tuple[str, str]], negatives: list[str]
    ) -> StreamLog:
        """The steady stream with bursts while the injector runs the plan; what was sent."""
        c = self.config
        stream = CampaignStream(
            self.s,
            tweets,
            negatives,
            keys=KEYS,
            rate=c.rate,
            burst_share=c.burst_share,
            seed=c.seed,
        )
        publishing = asyncio.create_task(stream.run())
        stop_bursts = asyncio.Event()
        bursting = asyncio.create_task(inject_bursts(stream, c, self.rng, stop_bursts))
        fault_loop = Loop(
            self.workers,
            self.server,
            self.broker,
            self.services["watch"],
            self.services["trainer"],
            self.services["alerts"],
            c.session_timeout_ms / 1000,
        )
        self.injector = Injector(self.rng, c.plan, fault_loop, self.pool, self._on_fault)
        began = time.monotonic()
        try:
            await self.injector.run()
            stop_bursts.set()
            await bursting
            # Windows close on event time: the stream must run past the last burst's
            # windows plus the grace for them to close.
            await asyncio.sleep(self.s.alert_grace_s + 2 * c.alert_window_s)
        finally:
            stop_bursts.set()
            await asyncio.gather(bursting, return_exceptions=True)
            stream.stop()
        log = await publishing
        self.injector.check()
        self.seconds["schedule"] = time.monotonic() - began
        return log

    async def alerts_for(self, log: StreamLog, within_s: float = 30.0) -> list[dict[str, Any]]:
        """The alerts topic once every burst is answered, or after `within_s`: ticks close
        the last windows once the alert worker has caught up with the labeled topic."""
        deadline = time.monotonic() + within_s
        while True:
            alerts = await read_all(self.s, self.s.alerts_topic, idle_s=1)
            missed, _ = bursts_alerted(log.bursts, alerts, self.config.alert_window_s)
            if not missed or time.monotonic() > deadline:
                return alerts
            await asyncio.sleep(2)

    async def audit(self, log: StreamLog) -> CampaignResult:
        """Read every output back and check it."""
        s, c = self.s, self.config
        assert self.injector is not None
        copies: defaultdict[Position, list[Copy]] = defaultdict(list)
        stamps: list[tuple[float, int]] = []
        # (event time, alert key, sentiment) of every labeled output, for missed bursts.
        labeled: list[tuple[float, str, str]] = []

        def collect(_: Audit, rec: Any) -> None:
            found = copy_of(rec, s)
            if found is not None:
                copies[found[0]].append(found[1])
            if rec.topic == s.output_topic:
                doc = json.loads(rec.value)
                stamps.append((doc["timestamps"]["classified"], int(doc["model"]["version"])))
                item = alert_item(doc)
                if item is not None:
                    labeled.append(item)

        began = time.monotonic()
        audit = await audit_outputs(
            s, log.positions, by="position", timeout_s=300, on_record=collect, settle_s=3
        )
        self.seconds["drain"] = time.monotonic() - began
        missing = audit.missing(log.positions, "position")
        if missing:
            by_partition: dict[int, list[int]] = defaultdict(list)
            for partition, offset in missing:
                by_partition[partition].append(offset)
            for partition, offsets in sorted(by_partition.items()):
                self.progress(
                    f"missing on partition {partition}: {len(offsets)} from offset {min(offsets)}"
                    f" to {max(offsets)}"
                )
        self.injector.check()
        # The watch's join across its restarts: every feedback record joins its prediction.
        waiting = None
        for _ in range(60):
            waiting = scrape(s.watch_metrics_port, "feedpulse_feedback_waiting")
            if waiting == 0:
                break
            await asyncio.sleep(1)
        alerts = await self.alerts_for(log)
        decisions = await read_all(s, s.decisions_topic, idle_s=1)
        faults = self.injector.faults
        unattributed = attribute(copies, faults, self._report_unexplained)
        missed, spurious = bursts_alerted(log.bursts, alerts, c.alert_window_s)
        for burst in missed:
            self.progress(
                f"burst on {burst.key} from t+{burst.start - self.started_wall:.0f}s to"
                f" t+{burst.end - self.started_wall:.0f}s: no alert;"
                f" {burst_shares(burst, labeled)}"
            )
        reasons = {**audit_reasons(audit), **other_reasons(audit)}
        return CampaignResult(
            faults=faults,
            published=len(log.positions),
            labeled=len(audit.labeled_at),
            dead_lettered=len(audit.dead_lettered_at),
            lost=sorted(audit.missing(log.positions, "position")),
            wrong=wrong_outcomes(audit, log.positions, log.outcomes),
            outage_dead_letters={r: n for r, n in reasons.items() if r in OUTAGE_REASONS},
            duplicates=sum(
                n - 1 for n in (audit.labeled_at + audit.dead_lettered_at).values() if n > 1
            ),
            duplicates_by_kind=duplicates_by_kind(faults),
            unattributed=unattributed,
            stale=stale_versions(stamps, self.timeline, c.model_watch_s + c.version_slack_s),
            versions=self.timeline.changes(),
            bursts=len(log.bursts),
            bursts_missed=len(missed),
            spurious_alerts=len(spurious),
            alerts=len(alerts),
            feedback_sent=len(log.feedback_ids),
            feedback_waiting=waiting,
            other_dead_letters=other_reasons(audit),
            decisions=decisions,
            seconds=self.seconds,
        )

    def stop(self) -> None:
        """Stop every process of the loop."""
        for service in self.services.values():
            service.stop(timeout_s=10)
        self.workers.stop(timeout_s=10)


async def run_campaign(
    base: Settings,
    broker: EmbeddedBroker,
    repository: Path,
    work: Path,
    config: CampaignConfig,
    new_triton: Callable[[Path, Path], TritonServer],
    tweets: list[tuple[str, str]],
    progress: Callable[[str], None] = print,
) -> CampaignResult:
    """Run the campaign in `work` (a copy of `repository` is the loop's model repository)."""
    shutil.copytree(repository, work / "models")
    add_served_copy(work / "models", base.model_name)
    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    server = new_triton(work / "models", work)
    await loop.run_in_executor(pool, server.start)
    campaign = Campaign(base, broker, work, config, server, pool, progress)
    stop_sampling = asyncio.Event()
    sampler: asyncio.Task[None] | None = None
    try:
        negatives = await asyncio.to_thread(negative_texts, campaign.s, tweets)
        await campaign.start()
        progress(f"loop ready in {campaign.seconds['start']:.0f}s; {config.plan.total} faults")
        sampler = asyncio.create_task(sample_versions(campaign.s, campaign.timeline, stop_sampling))
        log = await campaign.stream_through_faults(tweets, negatives)
        return await campaign.audit(log)
    finally:
        stop_sampling.set()
        if sampler is not None:
            await asyncio.gather(sampler, return_exceptions=True)
        campaign.stop()
        await loop.run_in_executor(pool, server.close)
        pool.shutdown()
