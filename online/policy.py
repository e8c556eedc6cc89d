"""When to fine-tune: drift events (or a feedback volume) become at most one job at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FineTunePolicy:
    """Turns triggers into jobs: one in flight per model, a cooldown after each, and
    triggers that arrive meanwhile coalesce into the next job (or the one running).

    A drift trigger waits for `min_feedback` labeled rows observed after it, so the job
    has new-domain data to learn from. `volume_trigger` (rows since the last job, 0 = off)
    queues a job without drift. At most `max_triggers` are kept as a job's reasons (the
    first ones); later ones are only counted in `coalesced`.
    """

    min_feedback: int = 1000
    cooldown_s: float = 1800.0
    volume_trigger: int = 0
    max_triggers: int = 100
    triggers: list[dict[str, Any]] = field(default_factory=list)
    in_flight: str | None = None
    coalesced: int = 0
    _rows_since_trigger: int = 0
    _rows_since_job: int = 0
    _cooldown_until: float = 0.0

    def on_drift(self, event: dict[str, Any]) -> None:
        """A drift event: the first one arms a job, later ones coalesce into it."""
        if self.triggers or self.in_flight is not None:
            self.coalesced += 1
        if not self.triggers:
            self._rows_since_trigger = 0
        # Drift that keeps firing for hours must not grow the job's reasons without bound.
        if len(self.triggers) < self.max_triggers:
            self.triggers.append(event)

    def on_feedback(self, rows: int = 1) -> None:
        """Labeled rows became available for training."""
        self._rows_since_trigger += rows
        self._rows_since_job += rows

    @property
    def rows_since_trigger(self) -> int:
        """Feedback rows seen since the first pending trigger."""
        return self._rows_since_trigger

    def due(self, now: float) -> list[dict[str, Any]] | None:
        """The reasons for a job if one should start now, else None."""
        if self.in_flight is not None or now < self._cooldown_until:
            return None
        if self.triggers and self._rows_since_trigger >= self.min_feedback:
            return list(self.triggers)
        if self.volume_trigger and self._rows_since_job >= self.volume_trigger:
            return [{"detector": "feedback_volume", "rows": self._rows_since_job}]
        return None

    def started(self, job_id: str) -> None:
        """A job was queued: triggers so far are its reasons."""
        self.in_flight = job_id
        self.triggers = []
        self._rows_since_job = 0

    def finished(self, job_id: str, now: float) -> bool:
        """A decision arrived; True if it ended the job in flight (starts the cooldown).

        Triggers that came while it ran described the data it trained on, so they are
        dropped; drift after a promotion is measured against the new version anyway.
        """
        if job_id != self.in_flight:
            return False
        self.in_flight = None
        # Each was counted in `coalesced` when it arrived.
        self.triggers = []
        self._cooldown_until = now + self.cooldown_s
        return True
