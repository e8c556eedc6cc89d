"""When to fine-tune: drift events (or a feedback volume) become at most one job at a time."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

# Decisions after which the drift behind the job is still there and the policy asks again.
RETRY_ACTIONS = frozenset({"rejected", "failed"})
# The back-off doubles per consecutive rejection up to this multiple of the base.
MAX_BACKOFF_FACTOR = 8
VOLUME_DETECTOR = "feedback_volume"
RETRY_DETECTOR = "retry"


@dataclass
class FineTunePolicy:
    """Turns triggers into jobs: one in flight per model, a cooldown after each, and
    triggers that arrive meanwhile coalesce into the next job (or the one running).

    A drift trigger waits for `min_feedback` labeled rows observed after it, so the job
    has new-domain data to learn from. `volume_trigger` (rows since the last job, 0 = off)
    queues a job without drift. At most `max_triggers` are kept as a job's reasons (the
    first ones); later ones are only counted in `coalesced`.

    A job that is rejected or fails leaves its drift in place (the detectors have reset
    onto the new data and will not report it again), so its drift reasons are armed again
    and the next job is due `retry_backoff_s` later (doubling with each consecutive
    rejection, at most `MAX_BACKOFF_FACTOR` times), or after the cooldown if that is
    longer. No job of any kind starts before then; a promotion resets the back-off.
    """

    min_feedback: int = 1000
    cooldown_s: float = 1800.0
    volume_trigger: int = 0
    max_triggers: int = 100
    retry_backoff_s: float = 3600.0
    triggers: list[dict[str, Any]] = field(default_factory=list)
    in_flight: str | None = None
    coalesced: int = 0
    # Consecutive rejected or failed jobs since the last promotion.
    rejections: int = 0
    _rows_since_trigger: int = 0
    _rows_since_job: int = 0
    _cooldown_until: float = 0.0
    # The reasons of the job in flight, armed again if it is rejected.
    _in_flight_reasons: list[dict[str, Any]] = field(default_factory=list)

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

    @property
    def not_before(self) -> float:
        """The earliest time a job may start (end of the cooldown or back-off)."""
        return self._cooldown_until

    def due(self, now: float) -> list[dict[str, Any]] | None:
        """The reasons for a job if one should start now, else None."""
        if self.in_flight is not None or now < self._cooldown_until:
            return None
        if self.triggers and self._rows_since_trigger >= self.min_feedback:
            return list(self.triggers)
        if self.volume_trigger and self._rows_since_job >= self.volume_trigger:
            return [{"detector": VOLUME_DETECTOR, "rows": self._rows_since_job}]
        return None

    def started(self, job_id: str, reasons: list[dict[str, Any]] | None = None) -> None:
        """A job was queued: triggers so far (or `reasons`) are its reasons."""
        self._in_flight_reasons = list(self.triggers if reasons is None else reasons)
        self.in_flight = job_id
        self.triggers = []
        self._rows_since_job = 0

    def backoff_s(self, rejections: int) -> float:
        """How long the policy waits after the `rejections`-th consecutive rejection."""
        if rejections <= 0:
            return 0.0
        factor: int = min(2 ** min(rejections - 1, 30), MAX_BACKOFF_FACTOR)
        return self.retry_backoff_s * factor

    def finished(self, job_id: str, now: float, action: str | None = None) -> bool:
        """A decision arrived; True if it ended the job in flight (starts the cooldown).

        Triggers that came while it ran described the data it trained on, so they are
        dropped; drift after a promotion is measured against the new version anyway. After
        a rejection or failure the job's drift reasons are armed again, due after the
        back-off (see the class).
        """
        if job_id != self.in_flight:
            return False
        self.in_flight = None
        # Each was counted in `coalesced` when it arrived.
        self.triggers = []
        wait = self.cooldown_s
        if action == "promoted":
            self.rejections = 0
        elif action in RETRY_ACTIONS:
            self.rejections += 1
            wait = max(wait, self.backoff_s(self.rejections))
            drift = [
                r
                for r in self._in_flight_reasons
                if r.get("detector") not in (VOLUME_DETECTOR, RETRY_DETECTOR)
            ]
            if drift:
                # The rows since the original drift still count: the retry carries them.
                self.triggers = [
                    *drift[: self.max_triggers - 1],
                    {
                        "detector": RETRY_DETECTOR,
                        "job_id": job_id,
                        "action": action,
                        "attempt": self.rejections + 1,
                    },
                ]
        self._in_flight_reasons = []
        self._cooldown_until = now + wait
        return True

    def to_state(self) -> dict[str, Any]:
        """Everything the policy knows (JSON values)."""
        return {
            "triggers": copy.deepcopy(self.triggers),
            "in_flight": self.in_flight,
            "in_flight_reasons": copy.deepcopy(self._in_flight_reasons),
            "coalesced": self.coalesced,
            "rejections": self.rejections,
            "rows_since_trigger": self._rows_since_trigger,
            "rows_since_job": self._rows_since_job,
            "cooldown_until": self._cooldown_until,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()`; the knobs (min feedback, cooldown...) stay this one's."""
        in_flight = state["in_flight"]
        self.triggers = [dict(t) for t in state["triggers"]][: self.max_triggers]
        self.in_flight = str(in_flight) if in_flight is not None else None
        self._in_flight_reasons = [dict(r) for r in state["in_flight_reasons"]]
        self.coalesced = int(state["coalesced"])
        self.rejections = int(state["rejections"])
        self._rows_since_trigger = int(state["rows_since_trigger"])
        self._rows_since_job = int(state["rows_since_job"])
        self._cooldown_until = float(state["cooldown_until"])
