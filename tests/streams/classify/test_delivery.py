"""Delivery without a broker: the transactional call sequence, id headers, secrets, TLS wiring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError, UnknownError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from serving.backends.contract import ModelInfo, Prediction, TaskPrediction
from serving.backends.triton_client import channel_args
from serving.tasks import DEFAULT_TASKS
from streams.classify import retry as backoff
from streams.classify.delivery import Delivery, ProduceFailedError
from streams.classify.outputs import Output, PreparedBatch, oversized_stand_in
from streams.classify.producer import (
    TransactionsUnsupportedError,
    start_producer,
    transactional_options,
)
from streams.classify.worker import ClassifyWorker
from streams.kafka.broker import free_port
from streams.kafka.clients import isolation_level
from streams.metrics import WorkerMetrics
from streams.settings import Settings

GROUP = "group-t"
PASSWORD = "pw-7f3c-never-logged"


@dataclass
class FakeProducer:
    """The producer methods the worker calls, recording them; sends fail on demand."""

    calls: list[Any] = field(default_factory=list)
    failing_sends: int = 0  # this many sends fail (their futures), then they succeed

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        self.calls.append(("send", topic, kwargs["key"]))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failing_sends > 0:
            self.failing_sends -= 1
            future.set_exception(KafkaTimeoutError("no acknowledgement"))
        else:
            future.set_result(None)
        return future

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self.calls.append(("offsets", dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


@dataclass
class FakeConsumer:
    """Consumer-side commits (at-least-once) are recorded; the exactly-once path makes none."""

    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    # What the group gave this member; a rebalance during delivery takes partitions away.
    assigned: set[TopicPartition] = field(
        default_factory=lambda: {TopicPartition("feeds.raw", p) for p in range(4)}
    )

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not set(offsets) <= self.assigned:
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned, "Partition is not assigned"  # as aiokafka's consumer does
        return None


class FakeClassifier:
    """Every text is positive World news."""

    info = ModelInfo("feedpulse_classifier", "1", "fake", DEFAULT_TASKS, 128)

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        tasks = {
            t.name: TaskPrediction(t.labels[0], 1.0, {t.labels[0]: 1.0}) for t in DEFAULT_TASKS
        }
        return [Prediction(tasks, truncated=False) for _ in texts]

    async def close(self) -> None:
        pass


@dataclass
class Rig:
    """A worker (for preparing batches) and the delivery of its outputs through fakes."""

    worker: ClassifyWorker
    delivery: Delivery

    @property
    def metrics(self) -> WorkerMetrics:
        return self.worker.metrics


def make_worker(**overrides: Any) -> tuple[Rig, FakeProducer, FakeConsumer]:
    settings = Settings(group_id=GROUP, metrics_port=0, **overrides)
    worker = ClassifyWorker(settings, FakeClassifier(), WorkerMetrics(CollectorRegistry()))
    producer, consumer = FakeProducer(), FakeConsumer()
    delivery = Delivery(
        settings,
        worker.metrics,
        producer,  # type: ignore[arg-type]
        consumer,  # type: ignore[arg-type]
        worker.transactional_id,
    )
    return Rig(worker, delivery), producer, consumer


def record(partition: int, offset: int, value: bytes) -> Any:
    return SimpleNamespace(
        topic="feeds.raw",
        partition=partition,
        offset=offset,
        key=f"k{partition}-{offset}".encode(),
        value=value,
        timestamp=1_700_000_000_000,
    )


async def prepared(rig: Rig) -> PreparedBatch:
    records = [
        record(0, 7, b'{"id": "a", "text": "markets rally"}'),
        record(0, 8, b'{"id": "b", "text": 3}'),  # a dead letter
        record(2, 41, b"plain text"),
    ]
    return await rig.worker.prepare(records)


EXPECTED_OFFSETS = {TopicPartition("feeds.raw", 0): 9, TopicPartition("feeds.raw", 2): 42}


async def test_exactly_once_sends_outputs_and_offsets_in_one_transaction() -> None:
    worker, producer, consumer = make_worker(exactly_once=True)
    batch = await prepared(worker)
    await worker.delivery.deliver(batch)
    sends = [c for c in producer.calls if isinstance(c, tuple) and c[0] == "send"]
    assert producer.calls == ["begin", *sends, ("offsets", EXPECTED_OFFSETS, GROUP), "commit"]
    assert len(sends) == 3
    assert consumer.commits == []  # offsets go only through the transaction
    assert worker.metrics.labeled._value.get() == 2


async def test_exactly_once_aborts_a_failed_send_and_retries_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backoff, "MAX_BACKOFF_S", 0.0)
    worker, producer, consumer = make_worker(exactly_once=True)
    producer.failing_sends = 1
    await worker.delivery.deliver(await prepared(worker))
    first_abort = producer.calls.index("abort")
    assert producer.calls[0] == "begin"
    assert "commit" not in producer.calls[:first_abort]
    assert not any(isinstance(c, tuple) and c[0] == "offsets" for c in producer.calls[:first_abort])
    retry = producer.calls[first_abort + 1 :]
    assert retry[0] == "begin" and retry[-2:] == [("offsets", EXPECTED_OFFSETS, GROUP), "commit"]
    assert len([c for c in retry if isinstance(c, tuple) and c[0] == "send"]) == 3
    assert consumer.commits == []


async def test_exactly_once_that_never_gets_acknowledged_commits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backoff, "MAX_BACKOFF_S", 0.0)
    worker, producer, consumer = make_worker(exactly_once=True)
    producer.failing_sends = 10_000
    with pytest.raises(ProduceFailedError):
        await worker.delivery.deliver(await prepared(worker))
    assert "commit" not in producer.calls
    assert not any(isinstance(c, tuple) and c[0] == "offsets" for c in producer.calls)
    assert producer.calls.count("begin") == producer.calls.count("abort") == 5
    assert consumer.commits == []
    assert worker.metrics.labeled._value.get() == 0


async def test_exactly_once_cancelled_mid_transaction_aborts_it() -> None:
    worker, producer, consumer = make_worker(exactly_once=True)
    batch = await prepared(worker)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    all_sent = asyncio.Event()

    async def hanging_send(topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        producer.calls.append(("send", topic, kwargs["key"]))
        if len(producer.calls) == 1 + len(batch.outputs):
            all_sent.set()
        return never

    producer.send = hanging_send  # type: ignore[method-assign]
    delivery = asyncio.create_task(worker.delivery.deliver(batch))
    await asyncio.wait_for(all_sent.wait(), 5)
    delivery.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivery
    assert producer.calls[-1] == "abort"
    assert "commit" not in producer.calls
    assert consumer.commits == []


async def test_at_least_once_commits_through_the_consumer_without_transactions() -> None:
    worker, producer, consumer = make_worker()
    await worker.delivery.deliver(await prepared(worker))
    assert all(isinstance(c, tuple) and c[0] == "send" for c in producer.calls)
    assert consumer.commits == [EXPECTED_OFFSETS]


async def test_a_batch_whose_partitions_were_revoked_is_left_to_the_new_owner() -> None:
    worker, _producer, consumer = make_worker()
    batch = await prepared(worker)
    consumer.assigned = {TopicPartition("feeds.raw", 1)}  # a rebalance took 0 and 2
    await worker.delivery.deliver(batch)  # no crash: the commit fails, the batch is re-read
    assert consumer.commits == []
    assert worker.metrics.commit_failures._value.get() == 1


async def test_every_output_carries_its_id_header_and_keeps_the_input_key() -> None:
    worker, _, _ = make_worker()
    batch = await prepared(worker)
    by_topic = {(o.topic, o.item_id): o for o in batch.outputs}
    assert set(by_topic) == {
        ("feeds.labeled", "a"),
        ("feeds.labeled", "feeds.raw-2-41"),
        ("feeds.dlq", "b"),
    }
    for out in batch.outputs:
        assert out.headers is not None
        assert dict(out.headers)["feedpulse.id"] == out.item_id.encode()
        assert out.key == f"k{out.origin.partition}-{out.origin.offset}".encode()


def test_oversized_stand_in_keeps_the_id_header() -> None:
    worker, _, _ = make_worker()
    origin = SimpleNamespace(topic="feeds.raw", partition=1, offset=3, key=None, timestamp_ms=None)
    out = Output("feeds.labeled", b"k", b"{}", [], "big-1", origin, b"raw")  # type: ignore[arg-type]
    stand_in = oversized_stand_in(worker.worker.settings, out, RuntimeError("too large"))
    assert stand_in.headers is not None
    assert dict(stand_in.headers)["feedpulse.id"] == b"big-1"


async def test_a_broker_without_transactions_fails_fast_with_a_clear_error() -> None:
    worker, _, _ = make_worker(exactly_once=True)

    class NoTransactions:
        stopped = False

        async def start(self) -> None:
            raise UnknownError()

        async def stop(self) -> None:
            self.stopped = True

    producer = NoTransactions()
    with pytest.raises(TransactionsUnsupportedError, match="does not support transactions"):
        await start_producer(worker.worker.settings, producer)  # type: ignore[arg-type]
    assert producer.stopped
    tid = worker.worker.transactional_id
    assert tid is not None
    assert tid.startswith("feedpulse-classify-")
    assert transactional_options(tid) == {
        "transactional_id": tid,
        "enable_idempotence": True,
    }


def test_transactional_ids_are_only_for_exactly_once_and_stable_per_process() -> None:
    at_least_once, _, _ = make_worker()
    assert at_least_once.worker.transactional_id is None
    assert transactional_options(at_least_once.worker.transactional_id) == {}
    a, _, _ = make_worker(exactly_once=True, transactional_id_prefix="p")
    b, _, _ = make_worker(exactly_once=True, transactional_id_prefix="p")
    assert a.worker.transactional_id == b.worker.transactional_id  # restarted: the same id


def test_readers_use_read_committed_only_with_exactly_once() -> None:
    assert isolation_level(Settings()) == "read_uncommitted"
    assert isolation_level(Settings(exactly_once=True)) == "read_committed"


def test_exactly_once_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPULSE_EXACTLY_ONCE", "true")
    assert Settings().exactly_once is True


def test_settings_never_show_the_sasl_password() -> None:
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="feedpulse",
        sasl_password=PASSWORD,
    )
    for text in (repr(settings), str(settings), settings.model_dump_json(), f"{settings}"):
        assert PASSWORD not in text
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == PASSWORD


async def test_worker_startup_logs_never_show_the_sasl_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Everything logged while a worker starts (aiokafka's debug output included) and the
    error it stops with, against a broker that is not there."""
    settings = Settings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="feedpulse",
        sasl_password=PASSWORD,
        metrics_port=0,
    )
    worker = ClassifyWorker(settings, FakeClassifier(), WorkerMetrics(CollectorRegistry()))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as failure:
        await asyncio.wait_for(worker.run(), 30)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(failure.value) and PASSWORD not in str(failure.value)


class RecordingClient:
    """Stands in for tritonclient's InferenceServerClient: keeps its constructor arguments."""

    created: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        RecordingClient.created.append((args, kwargs))

    async def close(self) -> None:
        pass


def test_triton_tls_options_reach_the_grpc_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonclient.grpc.aio

    from serving.backends import triton_client
    from streams.classify import backend

    RecordingClient.created.clear()
    monkeypatch.setattr(tritonclient.grpc.aio, "InferenceServerClient", RecordingClient)
    monkeypatch.setattr(triton_client, "TextTokenizer", lambda path, length: None)
    model = SimpleNamespace(
        name="feedpulse_classifier",
        version=3,
        tasks=DEFAULT_TASKS,
        tokenizer_path="unused",
        max_length=128,
    )
    monkeypatch.setattr(backend, "load_version", lambda repo, name, version: model)
    settings = Settings(
        backend="triton",
        triton_url="triton.internal:8001",
        triton_ssl=True,
        triton_root_certificates="/etc/feedpulse/ca.pem",
        triton_private_key="/etc/feedpulse/client.key",
        triton_certificate_chain="/etc/feedpulse/client.pem",
    )
    classifier = backend.open_version(settings, 3)
    assert classifier.info.version == "3"
    # The gRPC client is made on first use, on the event loop that uses it.
    assert not RecordingClient.created
    asyncio.run(classifier.is_ready())  # type: ignore[attr-defined]
    ((args, kwargs),) = RecordingClient.created
    assert args == ("triton.internal:8001",)
    assert kwargs.pop("channel_args") == channel_args()
    assert kwargs == {
        "ssl": True,
        "root_certificates": "/etc/feedpulse/ca.pem",
        "private_key": "/etc/feedpulse/client.key",
        "certificate_chain": "/etc/feedpulse/client.pem",
    }


def test_a_triton_client_certificate_needs_its_key_and_tls() -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(triton_ssl=True, triton_private_key="/k.pem")
    with pytest.raises(ValidationError, match="needs triton_ssl"):
        Settings(triton_private_key="/k.pem", triton_certificate_chain="/c.pem")


def test_local_triton_binds_loopback_unless_told_otherwise(tmp_path: Any) -> None:
    from streams.classify.backend import local_triton

    default = local_triton(Settings(model_repository=tmp_path))
    wide = local_triton(Settings(model_repository=tmp_path, triton_bind_host="0.0.0.0"))
    try:
        flags = [f for f in default.command() if "-address=" in f]
        assert sorted(flags) == [
            "--grpc-address=127.0.0.1",
            "--http-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
        ]
        assert "--grpc-address=0.0.0.0" in wide.command()
        # Bound to every address, local clients still connect over loopback.
        assert wide.grpc_url == f"127.0.0.1:{wide.grpc_port}"
    finally:
        default.close()
        wide.close()
