"""The model watch's snapshot: every piece of its state survives a write and a read, and a
restored watch goes on exactly as the one that never stopped would have."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online.feedback_records import Feedback, Observation
from online.jobs import Decision
from online.model_watch import ModelWatch, WatchConfig
from online.model_watch_state import restored_watch, watch_snapshot
from online.watch_state import (
    FORMAT_VERSION,
    MAGIC,
    SnapshotError,
    loads_river,
    move_aside,
    read_snapshot,
    remove_temporaries,
    snapshot_path,
    write_snapshot,
)
from serving.tasks import DEFAULT_TASKS, Gold, TaskHead

SENTIMENT, TOPIC = DEFAULT_TASKS
POSITIONS = [("labeled", 0, 412), ("labeled", 3, 77), ("feedback", 1, 5)]


def config(**overrides: Any) -> WatchConfig:
    values: dict[str, Any] = {
        "model": "m",
        "tasks": DEFAULT_TASKS,
        "drift_grace": 20,
        "mmd_reference": 100,
        "mmd_window": 50,
        "mmd_check_every": 10,
        "mmd_permutations": 50,
        "finetune_min_feedback": 30,
        "finetune_cooldown_s": 60,
        "finetune_retry_backoff_s": 100,
    }
    values.update(overrides)
    return WatchConfig(**values)


class Stream:
    """Predictions (embeddings around `shift`, labels that follow it) with feedback for
    most of them: some before their prediction, some never, the rest after."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def run(self, watch: ModelWatch, start: int, n: int, shift: float) -> list[Any]:
        out: list[Any] = []
        for i in range(start, start + n):
            emb = self.rng.normal(shift, 1.0, 8).astype(np.float32)
            sentiment = SENTIMENT.labels[int(self.rng.integers(3)) if shift < 1 else 0]
            topic = TOPIC.labels[int(self.rng.integers(4))]
            obs = Observation(
                f"i{i}",
                f"text {i}",
                {"sentiment": sentiment, "topic": topic},
                emb,
                "1",
                float(i),
            )
            truth = SENTIMENT.labels[int(self.rng.integers(3))]
            if i % 7 == 0:  # feedback first: it waits for its prediction
                out.append(watch.feedback(Feedback(f"i{i}", "sentiment", truth), float(i)))
            found, joined = watch.observe(obs, {"sentiment": 0.9 - shift / 4, "topic": 0.6})
            out.append((found, [(j.feedback, j.observation.id) for j in joined]))
            if i % 7 and i % 5:  # every fifth never gets feedback
                out.append(watch.feedback(Feedback(f"i{i}", "sentiment", truth), float(i)))
        return out


def strip(value: Any) -> Any:
    """Drift events without their random id and wall-clock time."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in ("id", "at")}
    if isinstance(value, (list, tuple)):
        return [strip(v) for v in value]
    return value


def round_trip(watch: ModelWatch, tmp_path: Path) -> tuple[ModelWatch, list[Feedback]]:
    path = snapshot_path(tmp_path, watch.config.model)
    write_snapshot(path, watch.config.model, POSITIONS, watch_snapshot(watch))
    snap = read_snapshot(path)
    assert snap.model == watch.config.model
    assert snap.positions == {(t, p): o for t, p, o in POSITIONS}
    return restored_watch(watch.config, snap.state)


def a_watch_with_a_job_in_flight() -> tuple[ModelWatch, Stream, str]:
    watch = ModelWatch(config())
    stream = Stream(0)
    stream.run(watch, 0, 150, shift=0.0)
    stream.run(watch, 150, 40, shift=2.0)
    assert watch.counts.drift_events > 0
    stream.run(watch, 190, 40, shift=2.0)
    job = watch.due_job(now=1000.0, base_version=1)
    assert job is not None
    # Feedback waiting for predictions not seen yet, and predictions kept without any.
    for i in range(5):
        watch.feedback(Feedback(f"w{i}", "sentiment", "negative"), 1000.0)
    return watch, stream, job.id


def test_every_piece_of_the_state_survives_a_write_and_a_read(tmp_path: Path) -> None:
    watch, _, job_id = a_watch_with_a_job_in_flight()
    back, left_out = round_trip(watch, tmp_path)
    assert left_out == []
    # The join: kept predictions (embeddings included) and waiting feedback, byte counts.
    assert back.join.sizes == watch.join.sizes and back.join.sizes[1] == 5
    assert back.join.bytes == watch.join.bytes
    for (a, _), (b, _) in zip(
        watch.join._predictions.values(), back.join._predictions.values(), strict=True
    ):
        assert (a.id, a.text, a.labels, a.model_version, a.seen_at) == (
            b.id,
            b.text,
            b.labels,
            b.model_version,
            b.seen_at,
        )
        assert a.embedding is not None and b.embedding is not None
        assert np.array_equal(a.embedding, b.embedding) and b.embedding.dtype == np.float32
    assert [w.feedback for w in back.join._waiting.values()] == [
        w.feedback for w in watch.join._waiting.values()
    ]
    # Rows, counts, version, policy with its job in flight.
    assert {t: list(r) for t, r in back.rows.items()} == {t: list(r) for t, r in watch.rows.items()}
    assert back.counts == watch.counts and back.version == watch.version
    assert back.policy.to_state() == watch.policy.to_state()
    assert back.policy.in_flight == job_id
    # Detectors and the hybrid head.
    assert [d.state() for d in back.detectors()] == [d.state() for d in watch.detectors()]
    for task in back.task_names():
        assert back.hybrid.accuracy(task) == watch.hybrid.accuracy(task)
        assert back.hybrid.learned == watch.hybrid.learned


def test_a_restored_watch_goes_on_exactly_like_the_one_that_never_stopped(
    tmp_path: Path,
) -> None:
    watch, _, job_id = a_watch_with_a_job_in_flight()
    back, _ = round_trip(watch, tmp_path)
    twin = Stream(1)
    # The same records into both: same drift events, joins, detector figures, scores.
    again = Stream(1)
    assert strip(twin.run(watch, 230, 200, shift=-1.5)) == strip(
        again.run(back, 230, 200, shift=-1.5)
    )
    assert [d.state() for d in back.detectors()] == [d.state() for d in watch.detectors()]
    assert back.counts == watch.counts
    for task in back.task_names():
        assert back.hybrid.accuracy(task) == watch.hybrid.accuracy(task)
    # Feedback that waited joins its prediction in the restored watch too.
    late = Observation("w3", "late text", {"sentiment": "neutral"}, None, "1", 2000.0)
    for w in (watch, back):
        _, joined = w.observe(late, {"sentiment": 0.5})
        assert [j.feedback.id for j in joined] == ["w3"]
    # The decision for the job queued before the "restart" ends it and starts the cooldown.
    decision = Decision(job_id, "m", "promoted", "better", 1, 2)
    for w in (watch, back):
        w.decided(decision, now=3000.0)
        assert w.policy.in_flight is None
        assert w.policy.not_before == 3000.0 + w.config.finetune_cooldown_s
    assert back.policy.to_state() == watch.policy.to_state()


def test_the_snapshot_is_taken_when_copied_not_when_written(tmp_path: Path) -> None:
    watch, stream, _ = a_watch_with_a_job_in_flight()
    state = watch_snapshot(watch)
    counts, sizes = watch.counts.predictions, watch.join.sizes
    rows = {t: len(r) for t, r in watch.rows.items()}
    stream.run(watch, 1000, 300, shift=0.0)  # the loop goes on while the thread writes
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", POSITIONS, state)
    back, _ = restored_watch(watch.config, read_snapshot(path).state)
    assert back.counts.predictions == counts and back.join.sizes == sizes
    assert {t: len(r) for t, r in back.rows.items()} == rows


def test_changed_detector_settings_keep_the_data_and_restart_the_detectors(
    tmp_path: Path,
) -> None:
    watch, _, job_id = a_watch_with_a_job_in_flight()
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", POSITIONS, watch_snapshot(watch))
    kept = watch.join.sizes[0]
    smaller = config(mmd_window=40, feedback_max_items=kept // 2)
    back, _ = restored_watch(smaller, read_snapshot(path).state)
    assert back.embedding.state()["reference"] == 0  # the MMD test starts afresh
    assert back.hybrid.learned == dict.fromkeys(back.task_names(), 0)
    assert back.policy.in_flight == job_id
    assert back.join.sizes[0] == kept // 2  # the newest, under this run's cap
    newest = list(watch.join._predictions)[-(kept // 2) :]
    assert list(back.join._predictions) == newest


def test_waiting_feedback_of_a_task_no_longer_watched_comes_back(tmp_path: Path) -> None:
    watch = ModelWatch(config())
    watch.feedback(Feedback("a", "topic", "World"), 0.0)
    watch.feedback(Feedback("b", "topic", "World", text="a training row"), 0.0)
    watch.feedback(Feedback("c", "sentiment", "positive"), 0.0)
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", [], watch_snapshot(watch))
    back, left_out = restored_watch(config(tasks=(SENTIMENT,)), read_snapshot(path).state)
    assert sorted(fb.id for fb in left_out) == ["a", "b"]
    assert back.join.sizes[1] == 1


def test_a_snapshot_of_another_model_is_refused(tmp_path: Path) -> None:
    watch = ModelWatch(config())
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", [], watch_snapshot(watch))
    with pytest.raises(SnapshotError, match="model"):
        restored_watch(config(model="other"), read_snapshot(path).state)


def damaged(path: Path) -> list[tuple[str, bytes]]:
    good = path.read_bytes()
    prefix = struct.calcsize("<8sIQIQI")
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF
    in_header = bytearray(good)
    in_header[prefix + 20] ^= 0x01
    other_version = good[:8] + struct.pack("<I", FORMAT_VERSION + 1) + good[12:]
    return [
        ("empty", b""),
        ("truncated", good[: len(good) // 2]),
        ("a flipped byte in the arrays", bytes(flipped)),
        ("a flipped bit in the header", bytes(in_header)),
        ("another format version", other_version),
        ("not a snapshot", b"PK\x03\x04" + good[4:]),
    ]


def test_a_damaged_snapshot_or_another_format_version_is_a_snapshot_error(
    tmp_path: Path,
) -> None:
    watch, _, _ = a_watch_with_a_job_in_flight()
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", POSITIONS, watch_snapshot(watch))
    for what, data in damaged(path):
        bad = tmp_path / "bad.snapshot"
        bad.write_bytes(data)
        with pytest.raises(SnapshotError) as exc:
            read_snapshot(bad)
        if what == "another format version":
            assert f"format version {FORMAT_VERSION + 1}" in str(exc.value)
    assert read_snapshot(path).positions  # the good one still reads


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def test_only_the_river_classes_are_ever_unpickled() -> None:
    with pytest.raises(SnapshotError, match="not allowed"):
        loads_river(pickle.dumps(_Boom()))
    with pytest.raises(SnapshotError, match="not allowed"):
        loads_river(pickle.dumps(np.zeros(3)))


def test_a_dollar_key_in_the_data_is_not_taken_for_an_array(tmp_path: Path) -> None:
    path = tmp_path / "x.snapshot"
    state = {"odd": {"$nd": 0}, "$$": [1, {"$b": "x"}], "arr": np.arange(3), "raw": b"\0\1"}
    write_snapshot(path, "m", [], state)
    back = read_snapshot(path).state
    assert back["odd"] == {"$nd": 0} and back["$$"] == [1, {"$b": "x"}]
    assert back["arr"].tolist() == [0, 1, 2] and back["raw"] == b"\0\1"


def test_corrupt_files_are_moved_aside_and_temporaries_removed(tmp_path: Path) -> None:
    path = snapshot_path(tmp_path, "m")
    for _ in range(4):
        path.write_bytes(MAGIC)
        moved = move_aside(path)
        assert moved.name.startswith(f"{path.name}.corrupt-") and moved.exists()
        assert not path.exists()
    # The newest few are kept for a post-mortem, not every one.
    assert 1 <= len(list(tmp_path.glob(f"{path.name}.corrupt-*"))) <= 2
    tmp = path.with_name(f"{path.name}.tmp-12345")
    tmp.write_bytes(b"half")
    assert remove_temporaries(path) == [tmp] and not tmp.exists()


TAGS = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel")


def run_tags(watch: ModelWatch, start: int, n: int, seed: int) -> list[Any]:
    """Multi-label predictions beside sentiment ones; feedback for most, some waiting."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for i in range(start, start + n):
        served = tuple(label for label in TAGS.labels if rng.random() < 0.4)
        true = tuple(label for label in TAGS.labels if rng.random() < 0.4)
        scores = {label: float(rng.random()) for label in TAGS.labels}
        labels: dict[str, Gold] = {"sentiment": SENTIMENT.labels[i % 3], "tags": served}
        obs = Observation(f"i{i}", f"text {i}", labels, None, "1", float(i))
        if i % 7 == 0:
            out.append(watch.feedback(Feedback(f"i{i}", "tags", true), float(i)))
        found, joined = watch.observe(obs, {"sentiment": 0.8, "tags": scores})
        out.append((found, [(j.feedback, j.observation.id) for j in joined]))
        if i % 7 and i % 5:
            out.append(watch.feedback(Feedback(f"i{i}", "tags", true), float(i)))
    # Feedback for predictions not seen yet: one set, one "none of them".
    watch.feedback(Feedback(f"w{start}", "tags", ("bug",)), float(start + n))
    watch.feedback(Feedback(f"v{start}", "tags", (), text="no tag applies"), float(start + n))
    return out


def same_join(a: ModelWatch, b: ModelWatch) -> None:
    assert [o.labels for o, _ in a.join._predictions.values()] == [
        o.labels for o, _ in b.join._predictions.values()
    ]
    assert [w.feedback for w in a.join._waiting.values()] == [
        w.feedback for w in b.join._waiting.values()
    ]
    assert a.join.bytes == b.join.bytes


def test_multi_label_state_survives_a_write_and_a_read(tmp_path: Path) -> None:
    watch = ModelWatch(config(tasks=(SENTIMENT, TAGS)))
    run_tags(watch, 0, 200, seed=0)
    back, left_out = round_trip(watch, tmp_path)
    assert left_out == []
    same_join(watch, back)
    assert any(isinstance(o.labels["tags"], tuple) for o, _ in back.join._predictions.values())
    assert {t: list(r) for t, r in back.rows.items()} == {t: list(r) for t, r in watch.rows.items()}
    waiting = [fb for w in back.join._waiting.values() for fb in w.feedback]
    assert Feedback("v0", "tags", (), "no tag applies") in waiting
    assert [d.state() for d in back.detectors()] == [d.state() for d in watch.detectors()]
    assert back.detectors()[-1].name == "tags.error_rate:bug"
    # Both go on alike.
    assert strip(run_tags(watch, 200, 150, seed=1)) == strip(run_tags(back, 200, 150, seed=1))
    assert [d.state() for d in back.detectors()] == [d.state() for d in watch.detectors()]


def test_a_snapshot_from_before_label_sets_is_still_read(tmp_path: Path) -> None:
    watch, _, _ = a_watch_with_a_job_in_flight()
    state = watch_snapshot(watch)
    # What the watch wrote before multi-label tasks: no label-set columns anywhere.
    join = state["join"].to_state()
    del join["waiting"]["labels"]
    assert join["predictions"].pop("label_sets") == {}
    rows = state["rows"].to_state()
    for columns in rows.values():
        del columns["labels"]
    path = snapshot_path(tmp_path, "m")
    write_snapshot(path, "m", POSITIONS, {**state, "join": join, "rows": rows})
    back, left_out = restored_watch(watch.config, read_snapshot(path).state)
    assert left_out == []
    same_join(watch, back)
    assert {t: list(r) for t, r in back.rows.items()} == {t: list(r) for t, r in watch.rows.items()}
    assert [d.state() for d in back.detectors()] == [d.state() for d in watch.detectors()]
