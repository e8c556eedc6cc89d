"""A model watch process killed with SIGKILL resumes from its snapshot: feedback sent after
the restart joins the predictions read before it, feedback that waited before it joins
predictions that come after, nothing is read twice even when the committed offsets lag
the snapshot (none at all here), and the decision for the job queued before the kill starts the back-off."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from online.feedback import UNMATCHED_FEEDBACK
from online.jobs import Decision, FineTuneJob
from online.watch_state import read_snapshot, snapshot_path
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics
from streams.learning.watch_worker import READY_MARKER, watch_topics
from streams.settings import Settings
from tests.kafka_support import by_reason, dead_letters, produce_librdkafka, scrape
from tests.streams.learning.test_poison import learning_settings, prediction, wait_for_marker

pytestmark = pytest.mark.integration

ITEMS = 40  # predictions before the kill
BEFORE = 20  # of their feedback before the kill (also the volume that queues the job)
LATE = 5  # feedback before the kill whose predictions come after the restart
JOINED = 'feedpulse_feedback_total{outcome="joined"}'
IN_FLIGHT = "feedpulse_finetune_job_in_flight"
# One update per joined feedback, restored or not (every served label is wrong here).
ERRORS_SEEN = 'feedpulse_drift_window_items{detector="sentiment.error_rate"}'


def feedback(item_id: str) -> tuple[bytes, bytes]:
    doc = {"id": item_id, "task": "sentiment", "label": "negative"}
    return item_id.encode(), json.dumps(doc).encode()


async def wait_for(
    port: int, proc: Any, done: Callable[[dict[str, float]], bool], timeout_s: float = 60
) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, "the model watch died"
        try:
            metrics = scrape(port)
        except OSError:
            metrics = {}
        if metrics and done(metrics):
            return metrics
        assert time.monotonic() < deadline, metrics
        await asyncio.sleep(0.3)


async def jobs(settings: Settings) -> list[FineTuneJob]:
    return [
        FineTuneJob.decode(rec.value)
        async for rec in read_topics(settings, [settings.jobs_topic], idle_timeout_s=2)
    ]


async def test_a_killed_watch_resumes_its_join_rows_and_job_in_flight(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = learning_settings(
        settings_factory,
        broker,
        watch_metrics_port=port,
        watch_state_dir=tmp_path / "state",
        watch_snapshot_s=1.0,
        finetune_volume_trigger=BEFORE,
        finetune_cooldown_s=600,
        finetune_retry_backoff_s=1200,
    )
    bootstrap = settings.bootstrap_servers
    await ensure_topics(settings, watch_topics(settings))
    watch = process_factory(settings, "watch", log_name="watch")
    wait_for_marker(watch, tmp_path / "watch-0.log", READY_MARKER)

    ids = [f"item-{i}" for i in range(ITEMS)]
    late = [f"late-{i}" for i in range(LATE)]
    produce_librdkafka(
        bootstrap, settings.output_topic, [(i.encode(), prediction(i)) for i in ids], "lz4"
    )
    before = [feedback(i) for i in ids[:BEFORE] + late]
    produce_librdkafka(bootstrap, settings.feedback_topic, before, "zstd")
    # BEFORE rows joined: the volume trigger queues a job on the next tick.
    await wait_for(
        port,
        watch,
        lambda m: (
            m.get(ERRORS_SEEN, 0) == BEFORE
            and m.get("feedpulse_feedback_waiting", 0) == LATE
            and m.get("feedpulse_finetune_jobs_total", 0) == 1
        ),
    )
    (job,) = await jobs(settings)
    # Killed once the state on disk has the job in flight (written right after queueing).
    path = snapshot_path(settings.watch_state_dir, settings.model_name)
    deadline = time.monotonic() + 30
    while not path.exists() or read_snapshot(path).state["policy"]["in_flight"] != job.id:
        assert time.monotonic() < deadline, "no snapshot with the job in flight"
        await asyncio.sleep(0.3)
    watch.send_signal(signal.SIGKILL)
    watch.wait(timeout=10)
    # Restarted in a group with nothing committed: the far end of committed offsets that lag
    # the snapshot (killed between writing it and committing). Only the seek to the
    # snapshot's positions keeps every record from being read a second time.
    settings = settings.model_copy(update={"watch_group_id": settings.watch_group_id + "-2"})
    restarted = process_factory(settings, "watch", log_name="watch")
    wait_for_marker(restarted, tmp_path / "watch-1.log", READY_MARKER)
    metrics = await wait_for(port, restarted, lambda m: IN_FLIGHT in m)
    assert metrics['feedpulse_watch_state_restored_total{outcome="restored"}'] == 1
    assert metrics[IN_FLIGHT] == 1  # the job queued before the kill

    decided_after = time.time()
    decision = Decision(job.id, settings.model_name, "rejected", "no better", job.base_version)
    produce_librdkafka(bootstrap, settings.decisions_topic, [(b"m", decision.encode())], "gzip")
    after = [feedback(i) for i in ids[BEFORE:]]
    produce_librdkafka(bootstrap, settings.feedback_topic, after, "snappy")
    produce_librdkafka(
        bootstrap, settings.output_topic, [(i.encode(), prediction(i)) for i in late], "lz4"
    )
    metrics = await wait_for(
        port,
        restarted,
        lambda m: (
            m.get(JOINED, 0) >= len(after)
            and m.get(ERRORS_SEEN, 0) >= ITEMS + LATE
            and m.get(IN_FLIGHT) == 0
        ),
    )
    # A few ticks: the volume trigger would queue another job without the cooldown.
    await asyncio.sleep(3)
    metrics = scrape(port)
    # Nothing read twice: only the late predictions are new.
    assert metrics[JOINED] == len(after)
    assert metrics["feedpulse_watch_predictions_total"] == LATE
    # The error detector resumed: every join before the kill and after it, once.
    assert metrics[ERRORS_SEEN] == ITEMS + LATE
    assert metrics["feedpulse_feedback_waiting"] == 0
    assert metrics.get('feedpulse_feedback_total{outcome="waiting"}', 0) == 0
    # The decision ended the restored job: no job until the back-off is over.
    wait = max(settings.finetune_cooldown_s, settings.finetune_retry_backoff_s)
    not_before = metrics["feedpulse_finetune_not_before_timestamp_seconds"]
    assert decided_after + wait <= not_before <= time.time() + wait
    assert metrics["feedpulse_finetune_consecutive_rejections"] == 1
    assert metrics.get("feedpulse_finetune_jobs_total", 0) == 0
    assert [j.id for j in await jobs(settings)] == [job.id]
    assert UNMATCHED_FEEDBACK not in by_reason(await dead_letters(settings))
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(timeout=30) == 0
