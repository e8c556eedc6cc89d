"""Consumer-group members built from the settings, with the options every feedpulse group
consumer shares: manual commits, security, transactions' isolation, bounded fetches."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

from streams.settings import Settings, isolation_level, kafka_client_options


def group_consumer(settings: Settings, group_id: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer in `group_id` that commits only when told to; `overrides` win."""
    s = settings
    options: dict[str, Any] = {
        **kafka_client_options(s),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": s.auto_offset_reset,
        "session_timeout_ms": s.session_timeout_ms,
        "heartbeat_interval_ms": max(500, s.session_timeout_ms // 5),
        "fetch_max_wait_ms": s.fetch_max_wait_ms,
        "max_partition_fetch_bytes": max(1_048_576, s.max_message_bytes),
        # Tansu ignores the per-partition limit (a 5 MB fetch of a 40k backlog was
        # measured); the per-fetch limit holds, and bounds memory under a backlog.
        "fetch_max_bytes": max(4 * 1_048_576, 2 * s.max_message_bytes),
        # With exactly-once producers, records of aborted transactions are never read.
        "isolation_level": isolation_level(s),
        **overrides,
    }
    return AIOKafkaConsumer(**options)
