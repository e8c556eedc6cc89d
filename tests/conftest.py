"""Shared fixtures: a real embedded broker, a model built once per session, settings factories."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.child_process import spawn
from serving.export import export_version
from serving.model_store import ModelVersion
from serving.multihead import MultiHeadModel, default_checkpoint
from serving.training.declaration import default_declaration, load_declared, with_data
from serving.training.heads import train_heads
from serving.training.pipeline import TrainPlan, train_version
from serving.triton.server import TritonServer
from streams.classify.processes import worker_env
from streams.kafka.broker import EmbeddedBroker, free_port
from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class BuiltModel:
    """The session's trained PyTorch model, its tokenizer, report and exported version."""

    def __init__(
        self, model: MultiHeadModel, tokenizer: Any, report: dict[str, Any], version: ModelVersion
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.report = report
        self.version = version

    @property
    def repository(self) -> Path:
        return self.version.path.parent.parent


@pytest.fixture(scope="session")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    """Train the default heads on the shipped seed data and export them, once per session."""
    repo = tmp_path_factory.mktemp("model-repo")
    model, tokenizer, report = train_heads(max_length=128)
    version = export_version(
        model,
        tokenizer,
        repository=repo,
        name="feedpulse_classifier",
        max_length=128,
        base_checkpoint=default_checkpoint(),
        metrics=report,
    )
    return BuiltModel(model, tokenizer, report, version)


@pytest.fixture
def small_data_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A data directory shaped like ../shared/data: the first `rows` lines of each of
    `sets`' split files (read from ../shared/data at test time, never kept in the repo)."""

    def make(sets: tuple[str, ...] = ("tweeteval_sentiment", "ag_news"), rows: int = 120) -> Path:
        root = tmp_path_factory.mktemp("data")
        for name in sets:
            (root / name).mkdir()
            for split in sorted((SHARED_DATA / name).glob("*.jsonl")):
                with split.open(encoding="utf-8") as src:
                    head = [line for _, line in zip(range(rows), src, strict=False)]
                (root / name / split.name).write_text("".join(head), encoding="utf-8")
        return root

    return make


@pytest.fixture
def broker_factory() -> Iterator[Callable[[], EmbeddedBroker]]:
    """Start real Tansu brokers on free loopback ports; all stopped at teardown."""
    started: list[EmbeddedBroker] = []

    def start() -> EmbeddedBroker:
        broker = EmbeddedBroker().start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[[], EmbeddedBroker]) -> EmbeddedBroker:
    """One real broker for this test."""
    return broker_factory()


@pytest.fixture
def settings_factory(
    built_model: BuiltModel, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """Settings for a test: unique topics and group, the session model, metrics off, the
    watch's state in a temporary directory."""

    def make(broker: EmbeddedBroker, **overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values: dict[str, Any] = {
            "bootstrap_servers": broker.bootstrap_servers,
            "input_topic": f"raw-{tag}",
            "output_topic": f"labeled-{tag}",
            "dlq_topic": f"dlq-{tag}",
            "group_id": f"group-{tag}",
            "model_repository": built_model.repository,
            "metrics_port": 0,
            "topic_partitions": 4,
            "watch_state_dir": tmp_path_factory.mktemp("watch-state"),
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m streams ...` subprocesses with given settings; all killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, *args: str, log_name: str = "proc") -> subprocess.Popen[bytes]:
        log = tmp_path / f"{log_name}-{len(procs)}.log"
        proc = spawn([sys.executable, "-m", "streams", *args], log, worker_env(settings))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def triton_repository(built_model: BuiltModel) -> Path:
    """The session's model repository with the checked-in Triton config, serving fp32.

    fp32, because with int8 weights activations are quantized per batch: an item's scores
    then depend on the requests Triton batches it with (up to ~0.2 in class scores on the
    seed held-out rows), and parity with the in-process backend could not be stated tightly.
    """
    config = (REPO_ROOT / "triton_models" / "feedpulse_classifier" / "config.pbtxt").read_text()
    assert 'string_value: "int8"' in config
    target = built_model.repository / "feedpulse_classifier" / "config.pbtxt"
    target.write_text(config.replace('string_value: "int8"', 'string_value: "fp32"'))
    return built_model.repository


def new_triton(repository: Path, log_dir: Path) -> TritonServer:
    """A Triton server (not started) on free loopback ports."""
    return TritonServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        python_env=REPO_ROOT / ".venv" / "triton-env",
        log_path=log_dir / "triton.log",
    )


@pytest.fixture(scope="session")
def emotion_version(tmp_path_factory: pytest.TempPathFactory) -> ModelVersion:
    """Heads for sentiment (TweetEval) and a multi-label emotion head (GoEmotions Ekman),
    fitted on a few hundred rows each, exported into a repository with the checked-in
    Triton config (which lists only the default heads' outputs)."""
    repo = tmp_path_factory.mktemp("emotion-repo")
    declared = with_data(
        default_declaration(SHARED_DATA),
        {
            "sentiment": SHARED_DATA / "tweeteval_sentiment",
            "emotion": SHARED_DATA / "goemotions_ekman",
        },
    )
    plan = TrainPlan(sets=load_declared(declared, limit=300), mode="heads", variants=("fp32",))
    (repo / "feedpulse_classifier").mkdir()
    config = (REPO_ROOT / "triton_models" / "feedpulse_classifier" / "config.pbtxt").read_text()
    # fp32 for exact parity between the backends (see conftest.triton_repository).
    (repo / "feedpulse_classifier" / "config.pbtxt").write_text(
        config.replace('string_value: "int8"', 'string_value: "fp32"')
    )
    version, _ = train_version(plan, repository=repo, name="feedpulse_classifier")
    return version
