"""A trainer stopped between deciding a job and announcing it: run again, the job answers
from the decision recorded in the repository (promoted with its figures and candidate,
or rejected) instead of "skipped: superseded" or a second training.

Training is replaced by a fake that exports a candidate the way the pipeline does (into
`candidates/N`, with random figures): what is tested is what the trainer does around it."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from online import trainer as trainer_module
from online.jobs import Decision, FineTuneJob
from online.trainer import MIN_TASK_ROWS, PromotionRule, TrainerConfig, run_job
from serving.model_store import (
    DECISION_KEY,
    STAGING_PREFIX,
    ModelVersion,
    job_version,
    next_version,
    read_version,
    serving_version,
)
from serving.tasks import DEFAULT_TASKS
from serving.training.data import LabeledText, TaskData, data_name
from serving.training.pipeline import TrainPlan
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.clients import kafka_client_options
from streams.kafka.tail import read_topics
from streams.kafka.topics import ensure_topics
from streams.learning.trainer_worker import TrainerWorker
from streams.settings import Settings
from tests.serving.test_model_versions import NAME, make_version

RULE = PromotionRule()
SENTIMENT = DEFAULT_TASKS[0]


class Killed(BaseException):
    """The trainer process dying at this point (nothing after it runs)."""


class FakeTraining:
    """`train_version` without training: a candidate with random figures, better than the
    served version by `gain` on the new domain and as good on the old one."""

    def __init__(self, gain: float) -> None:
        self.gain = gain
        self.calls = 0

    def __call__(
        self, plan: TrainPlan, *, repository: Path, name: str, candidate: bool = False, **_: Any
    ) -> tuple[ModelVersion, dict[str, Any]]:
        assert name == NAME
        self.calls += 1
        rng = random.Random()
        version = next_version(repository, name)
        path = make_version(repository, version, candidate=candidate, training={"r": plan.reason})
        baseline: dict[str, dict[str, float]] = {}
        test: dict[str, dict[str, float]] = {}
        for data, gain in (*((d, self.gain) for d in plan.sets), *((d, 0.0) for d in plan.replay)):
            key = f"{data_name(data)}/{plan.variants[0]}"
            served = {"accuracy": rng.uniform(0.3, 0.6), "macro_recall": rng.uniform(0.3, 0.6)}
            baseline[key] = {**served, "rows": len(data.test)}
            test[key] = {k: v + gain for k, v in served.items()} | {"rows": len(data.test)}
        training = {"train_seconds": rng.uniform(1, 100)}
        return read_version(path), {"test": test, "baseline": baseline, "training": training}


def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    tasks = [{"name": t.name, "labels": list(t.labels)} for t in DEFAULT_TASKS]
    make_version(repo, 1, tasks=tasks)
    return repo


def config_for(repo: Path) -> TrainerConfig:
    rows = [LabeledText(f"old text {i}", {SENTIMENT.name: SENTIMENT.labels[0]}) for i in range(9)]
    replay = [TaskData(SENTIMENT, rows, [], rows, source="replay-sentiment")]
    return TrainerConfig(repository=repo, name=NAME, replay=replay, rule=RULE)


def a_job(base_version: int = 1) -> FineTuneJob:
    labels = SENTIMENT.labels
    rows = [(f"new text {i}", labels[i % len(labels)]) for i in range(3 * MIN_TASK_ROWS)]
    return FineTuneJob(NAME, base_version, {SENTIMENT.name: rows}, [{"detector": "test"}])


@pytest.fixture
def better(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    fake = FakeTraining(gain=2 * RULE.margin)
    monkeypatch.setattr(trainer_module, "train_version", fake)
    return fake


@pytest.fixture
def worse(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    fake = FakeTraining(gain=-RULE.margin)
    monkeypatch.setattr(trainer_module, "train_version", fake)
    return fake


def assert_recovered(again: Decision, first: Decision) -> None:
    assert (again.job_id, again.action) == (first.job_id, first.action)
    assert again.candidate_version == first.candidate_version
    assert again.base_version == first.base_version
    assert again.figures == first.figures
    assert again.reason.startswith(first.reason) and "after a restart" in again.reason


def test_a_promotion_not_announced_is_announced_when_the_job_runs_again(
    tmp_path: Path, better: FakeTraining
) -> None:
    repo, job = repository(tmp_path), a_job()
    first = run_job(job, config_for(repo))  # promoted, then killed before publishing
    assert first.action == "promoted" and first.candidate_version is not None
    assert serving_version(repo, NAME) == first.candidate_version
    assert first.figures["rule"] == dataclasses.asdict(RULE)

    again = run_job(job, config_for(repo))
    assert_recovered(again, first)
    assert "recovered" in again.reason
    assert better.calls == 1
    assert serving_version(repo, NAME) == first.candidate_version


def test_a_kill_between_recording_and_moving_the_candidate_completes_the_promotion(
    tmp_path: Path, better: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, job = repository(tmp_path), a_job()
    promote = trainer_module.promote_version

    def killed(*args: Any) -> ModelVersion:
        raise Killed

    monkeypatch.setattr(trainer_module, "promote_version", killed)
    with pytest.raises(Killed):
        run_job(job, config_for(repo))
    state, candidate = job_version(repo, NAME, job.id) or pytest.fail("no record")
    assert state == "candidate" and serving_version(repo, NAME) == job.base_version
    recorded = Decision(**candidate.manifest[DECISION_KEY])

    monkeypatch.setattr(trainer_module, "promote_version", promote)
    again = run_job(job, config_for(repo))
    assert_recovered(again, recorded)
    assert again.candidate_version == candidate.version
    assert serving_version(repo, NAME) == candidate.version
    assert better.calls == 1


def test_a_recorded_promotion_whose_base_was_replaced_meanwhile_is_skipped(
    tmp_path: Path, better: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, job = repository(tmp_path), a_job()

    def killed(*args: Any) -> ModelVersion:
        raise Killed

    monkeypatch.setattr(trainer_module, "promote_version", killed)
    with pytest.raises(Killed):
        run_job(job, config_for(repo))
    newer = next_version(repo, NAME)
    make_version(repo, newer)  # promoted by hand before the trainer came back

    again = run_job(job, config_for(repo))
    assert again.action == "skipped" and f"now {newer}" in again.reason
    assert serving_version(repo, NAME) == newer
    # Recorded as such: the candidate is now disposable under the retention setting.
    state, candidate = job_version(repo, NAME, job.id) or pytest.fail("no record")
    assert state == "candidate" and candidate.manifest[DECISION_KEY]["action"] == "skipped"
    assert better.calls == 1


def test_a_rejection_not_announced_is_announced_again_without_retraining(
    tmp_path: Path, worse: FakeTraining
) -> None:
    repo, job = repository(tmp_path), a_job()
    first = run_job(job, config_for(repo))
    assert first.action == "rejected" and serving_version(repo, NAME) == job.base_version

    again = run_job(job, config_for(repo))
    assert_recovered(again, first)
    assert worse.calls == 1


def test_a_job_superseded_by_another_one_is_still_skipped(
    tmp_path: Path, better: FakeTraining
) -> None:
    repo = repository(tmp_path)
    other, late = a_job(), a_job()
    promoted = run_job(other, config_for(repo))
    assert promoted.action == "promoted"

    skipped = run_job(late, config_for(repo))
    assert skipped.action == "skipped" and "superseded" in skipped.reason
    assert skipped.candidate_version is None and better.calls == 1


def trainer_settings(broker: EmbeddedBroker, repo: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        bootstrap_servers=broker.bootstrap_servers,
        model_repository=repo,
        model_name=NAME,
        jobs_topic=f"jobs-{tag}",
        decisions_topic=f"decisions-{tag}",
        dlq_topic=f"dlq-{tag}",
        trainer_group_id=f"trainer-{tag}",
        metrics_port=0,
    )


@pytest.mark.integration
async def test_the_restarted_trainer_announces_the_promotion_on_the_decisions_topic(
    broker: EmbeddedBroker, tmp_path: Path, better: FakeTraining
) -> None:
    repo, job = repository(tmp_path), a_job()
    settings = trainer_settings(broker, repo)
    # The killed trainer: it promoted the job's candidate, published nothing, committed nothing.
    first = await asyncio.to_thread(run_job, job, config_for(repo))
    leftover = repo / NAME / f"{STAGING_PREFIX}{next_version(repo, NAME)}-0"
    (leftover / "checkpoint").mkdir(parents=True)

    await ensure_topics(settings, [settings.jobs_topic, settings.decisions_topic])
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(settings.jobs_topic, job.encode(), key=NAME.encode())
    finally:
        await producer.stop()

    worker = TrainerWorker(settings, lambda: config_for(repo))
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 60
    while not worker.decisions:
        assert not running.done(), running.exception()
        assert time.monotonic() < deadline, "the restarted trainer decided nothing"
        await asyncio.sleep(0.2)
    worker.stop()
    await asyncio.wait_for(running, timeout=30)

    published = [
        Decision.decode(rec.value)
        async for rec in read_topics(settings, [settings.decisions_topic], idle_timeout_s=2)
    ]
    assert len(published) == 1
    assert_recovered(published[0], first)
    assert better.calls == 1
    assert not leftover.exists()  # cleaned on start
