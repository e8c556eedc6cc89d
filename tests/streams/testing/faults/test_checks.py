"""The campaign's checks, on hand-made histories: each one can fail."""

from __future__ import annotations

from streams.testing.audit import Audit
from streams.testing.faults.checks import (
    Copy,
    VersionTimeline,
    alert_item,
    attribute,
    burst_shares,
    bursts_alerted,
    stale_versions,
    wrong_outcomes,
)
from streams.testing.faults.schedule import Fault, job_in_hand, job_phase
from streams.testing.faults.stream import BurstWindow


def test_a_version_counts_as_served_only_within_the_slack() -> None:
    timeline = VersionTimeline()
    for at, version in [(0.0, 1), (1.0, 1), (10.0, 2), (20.0, 1)]:
        timeline.sample(at, version)
    assert timeline.changes() == [(0.0, 1), (10.0, 2), (20.0, 1)]
    assert timeline.served_within(1, 12.0, slack_s=3.0)  # switched 2 s ago
    assert not timeline.served_within(1, 15.0, slack_s=3.0)
    assert timeline.served_within(2, 21.0, slack_s=3.0)
    assert stale_versions([(5.0, 1), (15.0, 1), (15.0, 2), (5.0, 2)], timeline, 3.0) == [
        (15.0, 1),
        (5.0, 2),
    ]


def test_a_burst_needs_an_alert_on_its_key_overlapping_it() -> None:
    bursts = [BurstWindow("ticker:T0", 100.0, 108.0), BurstWindow("ticker:T1", 130.0, 138.0)]
    alert = {"id": "a", "key": "ticker:T0", "sentiment": "negative"}
    alerts = [
        {**alert, "window": {"start": 104.0, "end": 108.0}},
        {**alert, "window": {"start": 104.0, "end": 108.0}},  # redelivered: same id
        {
            "id": "b",
            "key": "ticker:T1",
            "sentiment": "negative",
            "window": {"start": 90, "end": 94},
        },
    ]
    missed, spurious = bursts_alerted(bursts, alerts, window_s=4.0)
    assert missed == [bursts[1]]
    assert [a["id"] for a in spurious] == ["b"]


def test_a_missed_burst_reports_its_keys_negative_share_during_and_before_it() -> None:
    def doc(ts: float, ticker: str, sentiment: str) -> dict[str, object]:
        return {
            "input": {"timestamp_ms": int(ts * 1000)},
            "meta": {"ticker": ticker},
            "labels": {"sentiment": {"label": sentiment}},
        }

    docs = [doc(95.0, "T0", "neutral"), doc(96.0, "T0", "negative"), doc(101.0, "T0", "negative")]
    docs += [
        doc(102.0, "T0", "positive"),
        doc(103.0, "T1", "negative"),
        doc(109.0, "T0", "neutral"),
    ]
    items = [alert_item(d) for d in docs] + [alert_item({"labels": {}})]
    assert items[0] == (95.0, "ticker:T0", "neutral") and items[-1] is None
    labeled = [i for i in items if i is not None]
    burst = BurstWindow("ticker:T0", 100.0, 108.0)
    assert burst_shares(burst, labeled) == "negative 0.50 of 2 during, 0.50 of 2 before"
    assert burst_shares(burst, labeled, before_s=1.0) == "negative 0.50 of 2 during, none before"


def test_duplicates_are_charged_to_the_victim_or_the_latest_fault() -> None:
    kill = Fault("worker", 10.0, "pid 7", victim_pid=7)
    pause = Fault("broker", 20.0, "stopped 2s")
    copies = {
        (0, 1): [Copy(9.0, 7), Copy(12.0, 8)],  # the victim's output, redone
        (0, 2): [Copy(19.5, 8), Copy(22.0, 8)],  # repeated after the pause
        (0, 3): [Copy(1.0, 8), Copy(2.0, 8)],  # no fault explains it
        (0, 4): [Copy(30.0, 8)],
    }
    told: list[tuple[object, Copy, Copy]] = []
    assert attribute(copies, [kill, pause], lambda *seen: told.append(seen)) == 1
    assert (kill.duplicates, pause.duplicates) == (1, 1)
    assert told == [((0, 3), Copy(1.0, 8), Copy(2.0, 8))]  # a failed campaign names it


def test_a_fault_that_started_a_worker_lasts_until_that_worker_owns_partitions() -> None:
    join = Fault("join", 10.0, "worker 3")
    # A survivor's output repeated when the joiner's rebalance came, 12 s after the fault.
    repeated = {(0, 1): [Copy(21.0, 8), Copy(23.0, 9)]}
    assert attribute(repeated, [join]) == 1  # the join's worker was not ready yet: unknown
    join.settled_at = 22.5
    assert attribute(repeated, [join]) == 0
    assert join.duplicates == 1
    later = {(0, 2): [Copy(40.0, 8), Copy(41.0, 9)]}  # long after the joiner settled
    assert attribute(later, [join]) == 1


def test_valid_inputs_must_be_labeled_and_invalid_ones_dead_lettered_for_their_reason() -> None:
    audit = Audit()
    audit.labeled_at[(0, 0)] += 1
    audit.dead_lettered_at[(0, 1)] += 1
    audit.reasons_at[(0, 1)] = "classify_failed"
    audit.dead_lettered_at[(0, 2)] += 1
    audit.reasons_at[(0, 2)] = "invalid_json"
    wrong = wrong_outcomes(
        audit, [(0, 0), (0, 1), (0, 2), (0, 3)], [None, None, "invalid_json", "empty_text"]
    )
    assert wrong == ["(0, 1): valid but classify_failed", "(0, 3): expected empty_text, got lost"]


def test_the_trainer_phase_is_read_from_its_log() -> None:
    assert not job_in_hand("trainer ready\n") and job_phase("trainer ready\n") == "idle"
    started = "job j1: fine-tune from version 1 on {'sentiment': 300}\n"
    assert job_in_hand(started) and job_phase(started) == "starting"
    assert job_phase(started + "fine-tuning: 1/2 loss=0.7\n") == "mid-training"
    assert job_phase(started + "fine-tuning: 2/2\nevaluating tweeteval (int8): 10/40\n") == (
        "mid-promotion"
    )
    decided = started + "job j1 promoted (candidate 2, base 1): ok\n"
    assert not job_in_hand(decided)
