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


def rejected_once(policy: FineTunePolicy, now: float, action: str = "rejected") -> None:
    """Arm a drift, start its job, decide it with `action` at `now`."""
    policy.on_drift({"detector": "embedding.mmd"})
    policy.on_feedback(policy.min_feedback)
    reasons = policy.due(now=now)
    assert reasons is not None
    policy.started(f"job-{now}", reasons)
    assert policy.finished(f"job-{now}", now=now, action=action)


def test_a_rejected_job_asks_again_for_its_drift_after_the_back_off() -> None:
    policy = FineTunePolicy(min_feedback=5, cooldown_s=10, retry_backoff_s=100)
    rejected_once(policy, now=0)
    # No new drift: the detectors reset onto the new data when they fired.
    assert policy.due(now=99) is None
    reasons = policy.due(now=100)
    assert reasons is not None and reasons[0]["detector"] == "embedding.mmd"
    assert reasons[-1] == {
        "detector": "retry",
        "job_id": "job-0",
        "action": "rejected",
        "attempt": 2,
    }


def test_a_failed_job_asks_again_too_and_a_skipped_one_does_not() -> None:
    failed = FineTunePolicy(min_feedback=5, cooldown_s=10, retry_backoff_s=100)
    rejected_once(failed, now=0, action="failed")
    assert failed.due(now=100) is not None
    skipped = FineTunePolicy(min_feedback=5, cooldown_s=10, retry_backoff_s=100)
    rejected_once(skipped, now=0, action="skipped")
    assert skipped.due(now=10_000) is None and skipped.rejections == 0


def test_the_back_off_doubles_per_rejection_up_to_eight_times_and_a_promotion_resets_it() -> None:
    base = 100.0
    policy = FineTunePolicy(min_feedback=5, cooldown_s=1, retry_backoff_s=base)
    now = 0.0
    waits = []
    for _ in range(6):
        rejected_once(policy, now=now)
        waits.append(policy.not_before - now)
        assert policy.due(now=policy.not_before - 1) is None
        assert policy.due(now=policy.not_before) is not None
        now = policy.not_before
        policy.triggers = []  # the next rejected_once arms a fresh drift
    assert waits == [base * f for f in (1, 2, 4, 8, 8, 8)]
    rejected_once(policy, now=now, action="promoted")
    assert policy.rejections == 0 and policy.not_before == now + policy.cooldown_s
    rejected_once(policy, now=now + 1)
    assert policy.not_before == now + 1 + base


def test_the_cooldown_wins_over_a_shorter_back_off_and_volume_jobs_are_not_rearmed() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=500, retry_backoff_s=100, volume_trigger=3)
    policy.on_feedback(3)
    reasons = policy.due(now=0)
    assert reasons == [{"detector": "feedback_volume", "rows": 3}]
    policy.started("job-v", reasons)
    assert policy.finished("job-v", now=0, action="rejected")
    assert policy.triggers == [] and policy.not_before == 500
    policy.on_feedback(3)
    assert policy.due(now=499) is None and policy.due(now=500) is not None


def test_the_policy_state_round_trips_with_its_job_in_flight() -> None:
    policy = FineTunePolicy(min_feedback=1, cooldown_s=30, retry_backoff_s=100)
    rejected_once(policy, now=0)
    policy.on_feedback(1)
    reasons = policy.due(now=100)
    assert reasons is not None
    policy.started("job-2", reasons)
    back = FineTunePolicy(min_feedback=1, cooldown_s=30, retry_backoff_s=100)
    back.load_state(policy.to_state())
    assert back.in_flight == "job-2" and back.rejections == 1
    assert back.finished("job-2", now=200, action="rejected")
    assert back.not_before == 200 + back.backoff_s(2)
    assert [r["detector"] for r in back.triggers] == ["embedding.mmd", "retry"]
