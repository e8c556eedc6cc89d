"""The shortened fault campaign over the whole loop (the full one: `make bench-faults`).

Two classify workers on a real Triton, the model watch, the trainer and the alert worker
run as processes on a real broker, under a seeded schedule of every fault kind, while a
steady stream with feedback and negative bursts flows. Run with `-s` for the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.settings import Settings
from streams.testing.faults.campaign import run_campaign
from streams.testing.faults.config import CampaignConfig
from streams.testing.faults.report import print_report
from streams.testing.faults.schedule import Plan
from streams.testing.replay import read_tweets
from tests.conftest import SHARED_DATA, new_triton

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("FEEDPULSE_FAULT_SEED", "20261202"))
SHORT = Plan(
    counts={
        "worker": 3,
        "triton": 2,
        "triton_long": 1,
        "broker": 2,
        "watch": 2,
        "trainer": 2,
        "alerts": 2,
        "rollback": 1,
        "join": 1,
        "leave": 1,
    },
    gap_s=(1.0, 3.0),
)


@pytest.mark.timeout(900)
async def test_the_whole_loop_under_faults_loses_nothing_and_alerts_every_burst(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    triton_repository: Path,
    tmp_path: Path,
) -> None:
    tweets = read_tweets(SHARED_DATA / "tweeteval_sentiment" / "test.jsonl")
    result = await run_campaign(
        settings_factory(broker),
        broker,
        triton_repository,
        tmp_path,
        CampaignConfig(plan=SHORT, seed=SEED),
        new_triton,
        tweets,
    )
    print_report(result)
    print(json.dumps(result.summary()))

    assert len(result.faults) == SHORT.total
    assert not result.lost, f"{len(result.lost)} inputs lost, e.g. {result.lost[:5]}"
    assert not result.wrong, result.wrong[:10]
    assert not result.outage_dead_letters, result.outage_dead_letters
    assert not result.stale, f"outputs stamped with a version not served: {result.stale[:5]}"
    assert result.bursts >= 3 and result.bursts_missed == 0, result.summary()
    assert result.feedback_waiting == 0, "feedback lost its prediction across watch restarts"
    assert result.unattributed == 0
