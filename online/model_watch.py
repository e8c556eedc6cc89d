"""The model watch: detectors on every prediction, feedback joined and learned from, and
the fine-tuning policy deciding when a job is due. No Kafka here; the caller feeds it.

Its snapshot (capture and restore) is `online.model_watch_state`."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from online.drift import Detector, EmbeddingShift, detector_event_fields
from online.feedback import FeedbackJoin
from online.feedback_records import Feedback, Joined, Observation, TaskScore
from online.hybrid import HybridHead
from online.jobs import Decision, FineTuneJob
from online.policy import RETRY_ACTIONS, VOLUME_DETECTOR, FineTunePolicy
from online.task_detectors import AnyTaskDetectors, TaskDetectors, task_detectors
from serving.tasks import Gold, TaskHead

__all__ = ["ModelWatch", "TaskDetectors", "TrainingRow", "WatchConfig", "WatchCounts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    """Detector and policy knobs (see Settings for what each means)."""

    model: str
    tasks: tuple[TaskHead, ...]
    drift_delta: float = 1e-5
    drift_grace: int = 100
    mmd_reference: int = 500
    mmd_window: int = 200
    mmd_check_every: int = 50
    mmd_z: float = 6.0
    mmd_permutations: int = 200
    hybrid_learning_rate: float = 0.5
    hybrid_window: int = 500
    feedback_window_s: float = 3600.0
    feedback_max_items: int = 100_000
    feedback_max_bytes: int = 256 * 1024 * 1024
    feedback_waiting_max_bytes: int = 64 * 1024 * 1024
    feedback_keep_rows: int = 20_000
    finetune_min_feedback: int = 1000
    finetune_max_rows: int = 5000
    finetune_cooldown_s: float = 1800.0
    finetune_volume_trigger: int = 0
    finetune_retry_backoff_s: float = 3600.0
    # An encoded job is at most this big (the oldest rows are left out to fit).
    jobs_max_bytes: int = 8 * 1024 * 1024


@dataclass
class WatchCounts:
    """Running totals, exported as metrics."""

    predictions: int = 0
    feedback: int = 0
    joined: int = 0
    unmatched_kept: int = 0
    unmatched_dead: int = 0
    drift_events: int = 0
    jobs: int = 0
    version_changes: int = 0


@dataclass(frozen=True)
class TrainingRow:
    """A row kept for fine-tuning: a text, its true answer (a label, or a multi-label
    task's tuple of labels) and its number in arrival order."""

    text: str
    label: Gold
    seq: int


@dataclass
class ModelWatch:
    """Everything the model watch knows, fed one record at a time."""

    config: WatchConfig
    counts: WatchCounts = field(default_factory=WatchCounts)
    version: str | None = None
    last_decision: Decision | None = None

    def __post_init__(self) -> None:
        c = self.config
        self.join = FeedbackJoin(
            window_s=c.feedback_window_s,
            max_items=c.feedback_max_items,
            max_bytes=c.feedback_max_bytes,
            waiting_max_bytes=c.feedback_waiting_max_bytes,
        )
        # Multi-class tasks only: a softmax learner answers one label (see online.hybrid).
        self.hybrid = HybridHead(
            [t.name for t in c.tasks if not t.multilabel],
            learning_rate=c.hybrid_learning_rate,
            window=c.hybrid_window,
        )
        self.policy = FineTunePolicy(
            min_feedback=c.finetune_min_feedback,
            cooldown_s=c.finetune_cooldown_s,
            volume_trigger=c.finetune_volume_trigger,
            retry_backoff_s=c.finetune_retry_backoff_s,
        )
        self.rows: dict[str, deque[TrainingRow]] = {
            t.name: deque(maxlen=c.feedback_keep_rows) for t in c.tasks
        }
        self._seq = 0
        self._trigger_seq: int | None = None
        # The first row of the job in flight (None: all rows), for a retry to start from.
        self._job_since: int | None = None
        self._reset_detectors()

    def _reset_detectors(self) -> None:
        c = self.config
        self.tasks: dict[str, AnyTaskDetectors] = {
            t.name: task_detectors(t, delta=c.drift_delta, grace=c.drift_grace) for t in c.tasks
        }
        self.embedding = EmbeddingShift(
            name="embedding.mmd",
            reference_size=c.mmd_reference,
            window_size=c.mmd_window,
            check_every=c.mmd_check_every,
            z_threshold=c.mmd_z,
            permutations=c.mmd_permutations,
        )

    def detectors(self) -> list[Detector]:
        """Every detector, for metrics."""
        return [self.embedding, *(d for t in self.tasks.values() for d in t.all())]

    def _event(self, detector: Detector, task: str | None) -> dict[str, Any]:
        event = {
            "id": uuid.uuid4().hex[:12],
            "at": time.time(),
            "model": {"name": self.config.model, "version": self.version},
            "task": task,
            "items_seen": self.counts.predictions,
            **detector_event_fields(detector),
        }
        self.counts.drift_events += 1
        if self._trigger_seq is None:
            self._trigger_seq = self._seq
        self.policy.on_drift(event)
        log.warning("drift: %s on model version %s: %s", detector.name, self.version, event)
        return event

    def observe(
        self, obs: Observation, scores: Mapping[str, TaskScore]
    ) -> tuple[list[dict[str, Any]], list[Joined]]:
        """One prediction and its scores per task (a multi-label task's per label): update
        the detectors. Returns drift events, and feedback that was waiting for this
        prediction (already learned from)."""
        events: list[dict[str, Any]] = []
        if obs.model_version != self.version:
            if self.version is not None:
                # Another version's confidences and embeddings are not comparable.
                log.info(
                    "model version %s -> %s: detectors restart", self.version, obs.model_version
                )
                self.counts.version_changes += 1
                self._reset_detectors()
                self.hybrid.reset()
            self.version = obs.model_version
        self.counts.predictions += 1
        for task, det in self.tasks.items():
            answer = obs.labels.get(task)
            if answer is not None:
                events += [self._event(d, task) for d in det.observe(answer, scores.get(task))]
        if obs.embedding is not None:
            self.embedding.update(obs.embedding)
            if self.embedding.drift_detected:
                events.append(self._event(self.embedding, None))
        joined = self.join.observe(obs)
        for j in joined:
            events.extend(self._learn(j))
        return events, joined

    def feedback(self, fb: Feedback, now: float) -> tuple[list[dict[str, Any]], Feedback | None]:
        """One feedback record. Returns drift events and, if it cannot wait, the feedback."""
        self.counts.feedback += 1
        joined, overflow = self.join.add(fb, now)
        if joined is not None:
            return self._learn(joined), None
        if overflow is not None:
            return [], self._unmatched(overflow)
        return [], None

    def _keep_row(self, text: str, task: str, label: Gold) -> None:
        self._seq += 1
        self.rows[task].append(TrainingRow(text, label, self._seq))
        self.policy.on_feedback()

    def _learn(self, joined: Joined) -> list[dict[str, Any]]:
        fb, obs = joined.feedback, joined.observation
        self.counts.joined += 1
        events = []
        served = obs.labels.get(fb.task)
        if served is not None and obs.model_version == self.version:
            drifted = self.tasks[fb.task].error(served, fb.label)
            events += [self._event(d, fb.task) for d in drifted]
            one_label = isinstance(fb.label, str) and isinstance(served, str)
            if fb.task in self.hybrid.tasks and one_label and obs.embedding is not None:
                self.hybrid.learn(fb.task, obs.embedding, str(fb.label), str(served))
        text = fb.text or obs.text
        if text:
            self._keep_row(text, fb.task, fb.label)
        return events

    def _unmatched(self, fb: Feedback) -> Feedback | None:
        """Feedback with its text is still a training row; without, it goes back."""
        if fb.text:
            self.counts.unmatched_kept += 1
            self._keep_row(fb.text, fb.task, fb.label)
            return None
        self.counts.unmatched_dead += 1
        return fb

    def expire(self, now: float) -> list[Feedback]:
        """Age the join; returns unmatched feedback to dead-letter."""
        return [fb for fb in self.join.expire(now) if self._unmatched(fb) is not None]

    def due_job(self, now: float, base_version: int | None) -> FineTuneJob | None:
        """A fine-tuning job if the policy says one is due now, within `jobs_max_bytes`."""
        if base_version is None:
            return None
        reasons = self.policy.due(now)
        if reasons is None:
            return None
        since = self._trigger_seq if reasons[0].get("detector") != VOLUME_DETECTOR else None
        rows = {
            task: [(r.text, r.label) for r in kept if since is None or r.seq > since][
                -self.config.finetune_max_rows :
            ]
            for task, kept in self.rows.items()
        }
        job = FineTuneJob(
            model=self.config.model,
            base_version=base_version,
            rows={t: r for t, r in rows.items() if r},
            reasons=reasons,
        )
        self.policy.started(job.id, reasons)
        self._job_since = since
        self._trigger_seq = None
        try:
            job = job.fitted(self.config.jobs_max_bytes)
        except ValueError as exc:
            # Nothing to queue; the cooldown keeps the next tick from trying the same again.
            self.policy.finished(job.id, now)
            log.error("fine-tuning job %s dropped: %s", job.id, exc)
            return None
        self.counts.jobs += 1
        if job.rows_dropped_for_size:
            log.warning(
                "fine-tuning job %s: oldest rows left out to fit %d bytes: %s",
                job.id,
                self.config.jobs_max_bytes,
                job.rows_dropped_for_size,
            )
        log.warning(
            "fine-tuning job %s queued from version %s: %s rows, reasons %s",
            job.id,
            base_version,
            {t: len(r) for t, r in job.rows.items()},
            [r.get("detector") for r in reasons],
        )
        return job

    def decided(self, decision: Decision, now: float) -> None:
        """A trainer's decision: ends the job in flight and starts the cooldown."""
        self.last_decision = decision
        if self.policy.finished(decision.job_id, now, decision.action):
            # A retry trains on the rows since the drift the rejected job was queued for.
            retry = decision.action in RETRY_ACTIONS and bool(self.policy.triggers)
            self._trigger_seq = self._job_since if retry else None
            self._job_since = None
            log.info("job %s %s: %s", decision.job_id, decision.action, decision.reason)
            if retry:
                log.warning(
                    "job %s %s: its drift is armed again, next job not before %s (%d in a row)",
                    decision.job_id,
                    decision.action,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.policy.not_before)),
                    self.policy.rejections,
                )

    def task_names(self) -> Sequence[str]:
        """The watched tasks."""
        return list(self.tasks)
