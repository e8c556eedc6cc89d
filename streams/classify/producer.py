"""The worker's producer: acks from every replica, and with exactly-once a transactional id
that survives restarts, checked at start on brokers that cannot run transactions."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import output_max_bytes
from streams.settings import Settings

# How long a transactional producer may take to get its producer id before the broker is
# taken for one without transactions (some never answer, others answer with an error).
TRANSACTIONS_START_S = 30.0


class TransactionsUnsupportedError(RuntimeError):
    """exactly_once is on, but the broker cannot start a transactional producer."""


def transactional_id(settings: Settings) -> str | None:
    """The worker's transactional id with exactly-once; None for at-least-once.

    Stable across restarts of the same worker (in a container: its hostname and pid 1), so
    a restarted worker fences the transactions of its dead predecessor; distinct for
    several worker processes on one host, which must not fence each other.
    """
    if not settings.exactly_once:
        return None
    return f"{settings.transactional_id_prefix}-{socket.gethostname()}-{os.getpid()}"


def transactional_options(tid: str | None) -> dict[str, Any]:
    """Producer options for exactly-once; none for at-least-once."""
    if tid is None:
        return {}
    # aiokafka runs transactions only on an idempotent producer.
    return {"transactional_id": tid, "enable_idempotence": True}


def output_producer(settings: Settings, client_id: str, tid: str | None) -> AIOKafkaProducer:
    """The producer of labeled outputs and dead letters (not started)."""
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        client_id=client_id,
        acks="all",
        linger_ms=5,
        max_request_size=output_max_bytes(settings),
        compression_type=None
        if settings.output_compression == "none"
        else settings.output_compression,
        **transactional_options(tid),
    )


async def start_producer(settings: Settings, producer: AIOKafkaProducer) -> None:
    """Start the producer; a transactional one fails fast on a broker without transactions."""
    if not settings.exactly_once:
        await producer.start()
        return
    try:
        await asyncio.wait_for(producer.start(), TRANSACTIONS_START_S)
    except KafkaConnectionError:
        await producer.stop()
        raise
    except (KafkaError, TimeoutError) as exc:
        await producer.stop()
        raise TransactionsUnsupportedError(
            f"exactly_once is on, but the broker at {settings.bootstrap_servers} "
            f"does not support transactions (could not get a transactional producer id: "
            f"{exc!r}); use a broker with transactions (Apache Kafka >= 0.11) or turn "
            "exactly_once off for at-least-once delivery"
        ) from None
