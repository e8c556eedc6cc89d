"""The fine-tuning policy: one job in flight, cooldown, coalescing, volume trigger."""

from __future__ import annotations

from online.policy import FineTunePolicy


def test_a_drift_waits_for_enough_new_feedback_then_starts_one_job() -> None:
    policy = FineTunePolicy(min_feedback=10, cooldown_s=100)
    policy.on_feedback(50)  # rows before the drift do not count
    policy.on_drift({"detector": "embedding.mmd"})
    policy.on_feedback(9)
    assert policy.due(now=0) is None
    policy.on_feedback(1)
    assert policy.due(now=0) == [{"detector": "embedding.mmd"}]


def test_triggers_coalesce_and_a_running_job_blocks_the_next() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=100)
    policy.on_drift({"detector": "a"})
    policy.on_drift({"detector": "b"})
    policy.on_feedback(1)
    reasons = policy.due(now=0)
    assert reasons is not None and [r["detector"] for r in reasons] == ["a", "b"]
    policy.started("job-1")
    policy.on_drift({"detector": "c"})
    policy.on_feedback(100)
    assert policy.due(now=0) is None
    assert policy.coalesced == 2


def test_the_cooldown_starts_when_the_running_job_is_decided() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=100)
    policy.on_drift({"detector": "a"})
    policy.on_feedback(1)
    policy.started("job-1")
    assert not policy.finished("someone-else", now=10)
    assert policy.finished("job-1", now=10)
    policy.on_drift({"detector": "b"})
    policy.on_feedback(5)
    assert policy.due(now=50) is None
    assert policy.due(now=111) is not None


def test_a_feedback_volume_starts_a_job_without_drift() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=0, volume_trigger=100)
    policy.on_feedback(99)
    assert policy.due(now=0) is None
    policy.on_feedback(1)
    assert policy.due(now=0) == [{"detector": "feedback_volume", "rows": 100}]


def test_reasons_are_bounded_and_each_coalesced_trigger_counted_once() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=0, max_triggers=3)
    for i in range(10):
        policy.on_drift({"detector": f"d{i}"})
    policy.on_feedback(1)
    reasons = policy.due(now=0)
    assert reasons is not None and [r["detector"] for r in reasons] == ["d0", "d1", "d2"]
    assert policy.coalesced == 9
    policy.started("job-1")
    policy.on_drift({"detector": "late"})
    assert policy.finished("job-1", now=0)
    assert policy.coalesced == 10
