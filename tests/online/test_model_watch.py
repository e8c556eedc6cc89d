"""The model watch fed by hand: drift becomes one job with the rows after it, feedback is
learned from, a new model version restarts the detectors, decisions end the job."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from online.feedback_records import Feedback, Observation
from online.jobs import Decision, FineTuneJob
from online.model_watch import ModelWatch, WatchConfig
from serving.tasks import DEFAULT_TASKS, TaskHead

SENTIMENT = DEFAULT_TASKS[0]


def config(**overrides: object) -> WatchConfig:
    values: dict[str, object] = {
        "model": "m",
        "tasks": (SENTIMENT,),
        "mmd_reference": 100,
        "mmd_window": 50,
        "mmd_check_every": 10,
        "finetune_min_feedback": 40,
        "finetune_cooldown_s": 60,
    }
    values.update(overrides)
    return WatchConfig(**values)  # type: ignore[arg-type]


def feed(watch: ModelWatch, start: int, n: int, *, shift: float, version: str = "1") -> list[dict]:
    """n predictions with embeddings around `shift`, each followed by its feedback."""
    rng = np.random.default_rng(start)
    events: list[dict] = []
    for i in range(start, start + n):
        emb = rng.normal(shift, 1.0, 8).astype(np.float32)
        obs = Observation(f"i{i}", f"text {i}", {"sentiment": "neutral"}, emb, version, float(i))
        found, _ = watch.observe(obs, {"sentiment": 0.7})
        events += found
        more, back = watch.feedback(Feedback(f"i{i}", "sentiment", "neutral"), float(i))
        events += more
        assert back is None
    return events


def test_a_shift_gives_drift_then_one_job_with_only_the_rows_after_it() -> None:
    watch = ModelWatch(config())
    assert feed(watch, 0, 300, shift=0.0) == []
    assert watch.due_job(now=0, base_version=1) is None
    events = feed(watch, 300, 30, shift=2.0)
    assert [e["detector"] for e in events] == ["embedding.mmd"]
    assert events[0]["model"] == {"name": "m", "version": "1"} and events[0]["z"] >= 6
    assert watch.due_job(now=0, base_version=1) is None  # waits for 40 rows after the drift
    feed(watch, 330, 40, shift=2.0)
    job = watch.due_job(now=0, base_version=1)
    assert job is not None and job.base_version == 1
    texts = [t for t, _ in job.rows["sentiment"]]
    assert texts and all(int(t.split()[1]) >= 300 for t in texts)
    assert watch.due_job(now=0, base_version=1) is None  # one job in flight
    watch.decided(Decision(job.id, "m", "promoted", "why", 1, 2), now=10)
    assert watch.policy.in_flight is None


def test_feedback_is_learned_by_the_hybrid_head_and_scored_against_the_served_label() -> None:
    watch = ModelWatch(config())
    feed(watch, 0, 60, shift=0.0)
    assert watch.counts.joined == 60
    assert watch.hybrid.learned["sentiment"] == 60
    assert watch.hybrid.accuracy("sentiment")["served"] == 1.0


def test_a_new_model_version_restarts_detectors_and_the_hybrid_head() -> None:
    watch = ModelWatch(config())
    feed(watch, 0, 150, shift=0.0)
    # Version 2's embeddings differ from version 1's: no drift is claimed across versions.
    assert feed(watch, 150, 200, shift=3.0, version="2") == []
    assert watch.counts.version_changes == 1
    assert watch.hybrid.learned["sentiment"] == 200


def test_unmatched_feedback_with_text_is_kept_and_without_text_comes_back() -> None:
    watch = ModelWatch(config(feedback_window_s=10))
    watch.feedback(Feedback("x", "sentiment", "negative", text="kept as a training row"), 0.0)
    watch.feedback(Feedback("y", "sentiment", "negative"), 0.0)
    back = watch.expire(now=11.0)
    assert [fb.id for fb in back] == ["y"]
    assert watch.counts.unmatched_kept == 1 and watch.counts.unmatched_dead == 1
    assert [r.text for r in watch.rows["sentiment"]] == ["kept as a training row"]


def feed_long_rows(watch: ModelWatch, n: int) -> None:
    """n joined predictions whose texts (2,000 random hex characters) gzip cannot squash."""
    for i in range(n):
        text = f"{i:04d} {os.urandom(1000).hex()}"
        watch.observe(Observation(f"i{i}", text, {"sentiment": "neutral"}, None, "1", 0.0), {})
        watch.feedback(Feedback(f"i{i}", "sentiment", "neutral"), 0.0)


def test_a_due_job_is_fitted_to_the_job_byte_budget_keeping_the_newest_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ModelWatch(config(finetune_volume_trigger=50, jobs_max_bytes=20_000))
    feed_long_rows(watch, 50)
    with caplog.at_level(logging.WARNING, logger="online.model_watch"):
        job = watch.due_job(now=0, base_version=1)
    assert job is not None and len(job.encode()) <= 20_000
    rows = job.rows["sentiment"]
    assert 0 < len(rows) < 50 and rows[-1][0].startswith("0049 ")
    assert job.rows_dropped_for_size == {"sentiment": 50 - len(rows)}
    assert "left out to fit 20000 bytes" in caplog.text
    assert watch.counts.jobs == 1


def test_a_job_that_cannot_fit_its_budget_is_dropped_and_the_cooldown_starts() -> None:
    watch = ModelWatch(config(finetune_volume_trigger=5, jobs_max_bytes=100))
    feed_long_rows(watch, 5)
    assert watch.due_job(now=0, base_version=1) is None
    assert watch.policy.in_flight is None and watch.counts.jobs == 0
    feed_long_rows(watch, 5)
    assert watch.due_job(now=1, base_version=1) is None  # cooling down, not retrying


def test_the_join_gets_the_byte_budgets_of_the_config() -> None:
    watch = ModelWatch(config(feedback_max_bytes=12_345, feedback_waiting_max_bytes=6_789))
    assert (watch.join.max_bytes, watch.join.waiting_max_bytes) == (12_345, 6_789)


def test_a_rejected_job_is_queued_again_after_the_back_off_with_the_rows_since_its_drift() -> None:
    watch = ModelWatch(config(finetune_retry_backoff_s=500))
    feed(watch, 0, 300, shift=0.0)
    feed(watch, 300, 70, shift=2.0)
    job = watch.due_job(now=0, base_version=1)
    assert job is not None
    first = [t for t, _ in job.rows["sentiment"]]
    watch.decided(Decision(job.id, "m", "rejected", "no better", 1, 2), now=10)
    feed(watch, 370, 20, shift=2.0)
    assert watch.due_job(now=10 + 499, base_version=1) is None
    retry = watch.due_job(now=10 + 500, base_version=1)
    assert retry is not None and retry.id != job.id
    assert retry.reasons[-1]["detector"] == "retry"
    texts = [t for t, _ in retry.rows["sentiment"]]
    # The rejected job's rows and the ones since: all after the original drift.
    assert texts[: len(first)] == first and len(texts) == len(first) + 20


TAGS = TaskHead("tags", ("urgent", "billing", "bug"), "multilabel")


def feed_tags(
    watch: ModelWatch, start: int, n: int, served: tuple[str, ...], true: tuple[str, ...]
) -> list[dict]:
    """n multi-label predictions serving `served`, each followed by feedback saying `true`."""
    events: list[dict] = []
    scores = {label: (0.9 if label in served else 0.1) for label in TAGS.labels}
    for i in range(start, start + n):
        obs = Observation(f"t{i}", f"text {i}", {"tags": served}, None, "1", float(i))
        found, _ = watch.observe(obs, {"tags": scores})
        more, back = watch.feedback(Feedback(f"t{i}", "tags", true), float(i))
        assert back is None
        events += found + more
    return events


def test_a_multi_label_task_gets_rate_confidence_and_error_detectors_per_label() -> None:
    watch = ModelWatch(config(tasks=(SENTIMENT, TAGS)))
    assert feed_tags(watch, 0, 50, ("urgent", "bug"), ("urgent",)) == []
    names = {d.name: d.state() for d in watch.detectors()}
    for label in TAGS.labels:
        for family in ("label_rate", "confidence", "error_rate"):
            assert names[f"tags.{family}:{label}"]["seen"] == 50
    assert names["tags.label_rate:urgent"]["statistic"] == 1.0
    assert names["tags.label_rate:billing"]["statistic"] == 0.0
    assert names["tags.confidence:bug"]["statistic"] == pytest.approx(0.9)
    # Served {urgent, bug} against true {urgent}: only bug is wrong.
    assert names["tags.error_rate:bug"]["statistic"] == 1.0
    assert names["tags.error_rate:urgent"]["statistic"] == 0.0
    # The hybrid head is multi-class only; the rows keep the label sets.
    assert "tags" not in watch.hybrid.tasks and watch.counts.joined == 50
    assert {r.label for r in watch.rows["tags"]} == {("urgent",)}


def test_a_label_whose_rate_moves_drifts_by_name() -> None:
    watch = ModelWatch(config(tasks=(TAGS,)))
    assert feed_tags(watch, 0, 300, ("urgent",), ("urgent",)) == []
    events = feed_tags(watch, 300, 300, ("urgent", "billing"), ("urgent", "billing"))
    detectors = {e["detector"] for e in events}
    assert "tags.label_rate:billing" in detectors
    assert all(e["task"] == "tags" for e in events)


def test_a_label_the_model_starts_getting_wrong_drifts_on_its_error_rate() -> None:
    watch = ModelWatch(config(tasks=(TAGS,)))
    feed_tags(watch, 0, 300, ("bug",), ("bug",))
    # Still serving bug alone, but the truth now adds urgent: urgent's errors jump.
    events = feed_tags(watch, 300, 300, ("bug",), ("urgent", "bug"))
    assert [e["detector"] for e in events] == ["tags.error_rate:urgent"]


def test_a_job_carries_multi_label_rows_as_label_sets_through_its_encoding() -> None:
    watch = ModelWatch(config(tasks=(SENTIMENT, TAGS), finetune_volume_trigger=30))
    feed_tags(watch, 0, 20, ("bug",), ("urgent", "bug"))
    feed_tags(watch, 20, 10, (), ())
    job = watch.due_job(now=0, base_version=1)
    assert job is not None
    rows = FineTuneJob.decode(job.encode()).rows["tags"]
    assert rows == job.rows["tags"]
    assert rows[0] == ("text 0", ("urgent", "bug")) and rows[-1] == ("text 29", ())
