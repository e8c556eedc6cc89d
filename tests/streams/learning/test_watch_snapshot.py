"""The watch worker's side of the snapshot, without a broker: what a start does with the
file it finds (restore, fresh, corrupt: moved aside and counted, never a crash) and where
each assigned partition resumes."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from online.feedback_records import Feedback, Observation
from online.model_watch import ModelWatch
from online.model_watch_state import watch_snapshot
from online.watch_state import FORMAT_VERSION, write_snapshot
from serving.tasks import DEFAULT_TASKS
from streams.learning.watch_worker import WatchWorker, watch_config
from streams.metrics import WatchMetrics
from streams.settings import Settings

RESTORED = "feedpulse_watch_state_restored_total"


def worker(tmp_path: Path, **overrides: object) -> tuple[WatchWorker, CollectorRegistry]:
    settings = Settings(watch_state_dir=tmp_path, metrics_port=0, **overrides)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    watch = ModelWatch(watch_config(settings, DEFAULT_TASKS))
    return WatchWorker(settings, watch, WatchMetrics(registry)), registry


def moved_aside(w: WatchWorker) -> list[Path]:
    return list(w.snapshots.path.parent.glob(f"{w.snapshots.path.name}.corrupt-*"))


def outcome_count(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value(RESTORED, {"outcome": outcome}) or 0.0


def test_the_setting_reaches_the_policy() -> None:
    settings = Settings(finetune_retry_backoff_s=123.0)
    config = watch_config(settings, DEFAULT_TASKS)
    assert ModelWatch(config).policy.retry_backoff_s == settings.finetune_retry_backoff_s


async def test_no_snapshot_is_a_fresh_start(tmp_path: Path) -> None:
    w, registry = worker(tmp_path)
    assert await w.restore() == "fresh"
    assert outcome_count(registry, "fresh") == 1


async def test_a_snapshot_restores_the_watch_and_its_positions(tmp_path: Path) -> None:
    w, registry = worker(tmp_path)
    watch = w.watch
    watch.observe(
        Observation("a", "t", {"sentiment": "neutral"}, None, "1", 0.0), {"sentiment": 0.5}
    )
    watch.feedback(Feedback("b", "sentiment", "negative"), 0.0)
    state = watch_snapshot(watch)
    state["worker"] = {"widths": {"1": 384}, "topics": w._topics()}
    write_snapshot(w.snapshots.path, watch.config.model, [("labeled", 2, 17)], state)

    again, registry = worker(tmp_path)
    assert await again.restore() == "restored"
    assert outcome_count(registry, "restored") == 1
    assert again.watch is not watch and again.watch.join.sizes == (1, 1)
    # Ahead of what was committed (or nothing committed): resume at the snapshot.
    tp = TopicPartition("labeled", 2)
    assert again.snapshots.note_assignment(tp, None) == 17
    assert again.snapshots.note_assignment(tp, 5) == 17
    assert again.snapshots.note_assignment(tp, 17) is None
    assert again.snapshots.note_assignment(TopicPartition("labeled", 0), 3) is None


def test_a_commit_past_the_snapshot_wins_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w, _ = worker(tmp_path)
    tp = TopicPartition("labeled", 1)
    w.snapshots.positions[tp] = 10
    with caplog.at_level(logging.WARNING):
        assert w.snapshots.note_assignment(tp, 25) is None
    assert "past the snapshot" in caplog.text
    assert w.snapshots.positions[tp] == 25  # later commits never go backwards


@pytest.mark.parametrize("damage", ["garbage", "another format version"])
async def test_an_unusable_snapshot_is_moved_aside_counted_and_the_watch_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    w, registry = worker(tmp_path)
    write_snapshot(w.snapshots.path, w.watch.config.model, [], watch_snapshot(w.watch))
    data = w.snapshots.path.read_bytes()
    if damage == "garbage":
        data = data[: len(data) // 3]
    else:
        data = data[:8] + struct.pack("<I", FORMAT_VERSION + 1) + data[12:]
    w.snapshots.path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        assert await w.restore() == "corrupt"
    assert outcome_count(registry, "corrupt") == 1
    assert not w.snapshots.path.exists()
    (aside,) = moved_aside(w)
    assert aside.read_bytes() == data
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "starting fresh" in warnings[0].getMessage()
    assert w.watch.join.sizes == (0, 0)
    # The next start finds nothing and starts fresh again: no crash loop.
    assert await w.restore() == "fresh"


async def test_a_snapshot_of_another_model_is_not_used(tmp_path: Path) -> None:
    w, _ = worker(tmp_path)
    other = ModelWatch(watch_config(Settings(model_name="other"), DEFAULT_TASKS))
    write_snapshot(w.snapshots.path, "other", [], watch_snapshot(other))
    assert await w.restore() == "corrupt"


async def test_a_snapshot_of_other_topics_is_kept_aside_and_not_used(tmp_path: Path) -> None:
    w, _ = worker(tmp_path)
    state = watch_snapshot(w.watch)
    state["worker"] = {"widths": {}, "topics": w._topics()}
    write_snapshot(w.snapshots.path, w.watch.config.model, [], state)
    other, registry = worker(tmp_path, output_topic="elsewhere")
    assert await other.restore() == "mismatch"
    assert outcome_count(registry, "mismatch") == 1
    assert not other.snapshots.path.exists()
