"""The online-learning loop, shortened, on a real broker: TweetEval tweets with feedback,
then a switch to Financial PhraseBank sentences. The watch must detect the switch and not
the tweets, queue a job, the trainer must fine-tune, judge and promote, the running worker
must start labeling with the new version, and a rollback must bring the old one back."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from online.jobs import Decision
from streams.classify.processes import worker_env
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.tail import read_topics
from streams.settings import Settings
from streams.testing.feedback_replay import Phase, replay_with_feedback
from streams.testing.online_scenario import online_processes, run_scenario
from streams.testing.replay import read_tweets
from tests.conftest import SHARED_DATA, BuiltModel

pytestmark = pytest.mark.integration

SMALL = {
    "mmd_reference": 200,
    "mmd_window": 100,
    "mmd_check_every": 25,
    "finetune_min_feedback": 700,
    "finetune_cooldown_s": 0,
    # A short, brisk fine-tune: CI has minutes, not the benchmark's quarter hour.
    "finetune_max_steps": 150,
    "finetune_batch_size": 16,
    "finetune_lr": 1e-4,
    "finetune_head_lr": 3e-3,
    "finetune_epochs": 2,
    "finetune_replay_rows": 300,
    "finetune_old_eval_rows": 300,
    # Few held-out rows: a modest bar, still one a worse candidate fails.
    "promote_margin": 0.02,
    "promote_max_drop": 0.10,
    "watch_metrics_port": 0,
    "model_watch_s": 1.0,
}


def shuffled(path: Path, n: int, seed: int) -> list[tuple[str, str]]:
    rows = read_tweets(path)
    random.Random(seed).shuffle(rows)
    return rows[:n]


async def versions_of(settings: Settings, prefix: str) -> dict[str, str]:
    """Item id -> model version, for labeled outputs whose id starts with `prefix`."""
    found = {}
    async for rec in read_topics(settings, [settings.output_topic], idle_timeout_s=3):
        doc = json.loads(rec.value)
        if doc["id"].startswith(prefix):
            found[doc["id"]] = doc["model"]["version"]
    return found


@pytest.mark.timeout(900)
async def test_switch_of_domain_is_detected_fine_tuned_promoted_and_rolled_back(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    built_model: BuiltModel,
    tmp_path: Path,
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(built_model.version.path, repo / built_model.version.name / "1")
    settings = settings_factory(broker, model_repository=repo, **SMALL)
    tweets = shuffled(SHARED_DATA / "tweeteval_sentiment" / "test.jsonl", 600, 0)
    sentences = shuffled(SHARED_DATA / "financial_phrasebank" / "train.jsonl", 1000, 1)

    with online_processes(settings, tmp_path):
        result = await run_scenario(settings, tweets, sentences, lag=10, rate=120, timeout_s=600)
        print(json.dumps(result.summary(), indent=1)[:4000])
        assert result.false_alarms == 0, [e for _, e in result.log.drift]
        assert result.detection_delay_items is not None
        assert result.detection_delay_items <= 300

        assert result.log.jobs, "no fine-tuning job was queued"
        decisions = [Decision(**d) for _, d in result.log.decisions]
        assert [d.action for d in decisions] == ["promoted"], decisions
        decision = decisions[0]
        assert decision.base_version == 1 and decision.candidate_version == 2
        new = [
            f for f in decision.figures.values() if isinstance(f, dict) and f.get("domain") == "new"
        ]
        old = [
            f for f in decision.figures.values() if isinstance(f, dict) and f.get("domain") == "old"
        ]
        assert new and old
        assert all(f["candidate"] - f["served"] >= SMALL["promote_margin"] for f in new)
        # The worker switched to version 2 without a restart.
        assert result.promoted_version == 2 and "2" in result.log.versions

        rollback = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streams", "model", "rollback"],
            env=worker_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rollback.returncode == 0, rollback.stderr
        assert json.loads(rollback.stdout)["action"] == "rolled_back"
        await asyncio.sleep(SMALL["model_watch_s"] * 3)
        await replay_with_feedback(settings, [Phase("after-rollback", sentences[:30])])
        deadline = time.monotonic() + 60
        seen: dict[str, Any] = {}
        while len(seen) < 30 and time.monotonic() < deadline:
            seen = await versions_of(settings, "after-rollback-")
        assert len(seen) == 30 and set(seen.values()) == {"1"}, seen
