"""Rebalances: the batch in flight is delivered and committed before partitions move."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener

log = logging.getLogger(__name__)

# Logged when the worker owns partitions; the demo and tests wait for it before publishing.
READY_MARKER = "partitions assigned:"


class BatchOwner(Protocol):
    """What the listener needs of the worker."""

    batch_lock: asyncio.Lock
    assigned: asyncio.Event

    def abandon_batch(self) -> None: ...

    def rebalanced(self) -> None: ...

    async def settle_delivery(self) -> None: ...


class SettleOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Let the batch being delivered finish and commit before partitions move.

    A batch still waiting on inference (the server away) is abandoned instead, uncommitted:
    waiting for it would hold the whole group's rebalance hostage to the outage.
    """

    def __init__(self, owner: BatchOwner) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Wait for the batch in flight; its outcome is left to the worker's loop."""
        self._owner.abandon_batch()
        async with self._owner.batch_lock:
            self._owner.rebalanced()
            await self._owner.settle_delivery()
            log.info(
                "partitions revoked: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in revoked)
            )
        self._owner.assigned.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Log the assignment (the readiness marker) and mark the worker assigned."""
        log.info("%s %s", READY_MARKER, sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        if assigned:
            self._owner.assigned.set()
