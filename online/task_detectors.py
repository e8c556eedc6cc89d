"""A watched task's drift detectors: what its predictions and feedback update, by kind.

A multi-class task has three ADWINs: its label's confidence, the label mix and the 0/1
error of the served label. A multi-label task has them per label: the label's rate (the
share of items carrying it), its score, and its 0/1 error once feedback arrives. Each
family of per-label detectors splits `delta` over the labels (Bonferroni, as the label
mix does), so a task with many labels does not alarm more often than one with few.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from online.drift import Detector, LabelMix, MeanShift
from online.feedback_records import TaskScore
from online.watch_state import SnapshotError
from serving.tasks import Gold, TaskHead


@dataclass
class TaskDetectors:
    """A multi-class task's detectors: confidence, label mix, and error rate once feedback
    arrives."""

    confidence: MeanShift
    mix: LabelMix
    errors: MeanShift

    def all(self) -> list[Detector]:
        """Every detector of the task."""
        return [self.confidence, self.mix, self.errors]

    def observe(self, answer: Gold, score: TaskScore | None) -> list[Detector]:
        """One prediction; returns the detectors that drifted."""
        if not isinstance(answer, str):
            return []  # not this kind's answer (read_prediction refuses those)
        self.confidence.update(score if isinstance(score, float | int) else 0.0)
        self.mix.update(answer)
        return [d for d in (self.confidence, self.mix) if d.drift_detected]

    def error(self, served: Gold, true: Gold) -> list[Detector]:
        """One feedback label against the served one; returns the detectors that drifted."""
        if not (isinstance(served, str) and isinstance(true, str)):
            return []  # a label set: not this kind's answer
        self.errors.update(0.0 if served == true else 1.0)
        return [self.errors] if self.errors.drift_detected else []

    def to_state(self) -> dict[str, Any]:
        """Every detector's state."""
        return {
            "confidence": self.confidence.to_state(),
            "mix": self.mix.to_state(),
            "errors": self.errors.to_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()` of the same task's detectors."""
        self.confidence.load_state(state["confidence"])
        self.mix.load_state(state["mix"])
        self.errors.load_state(state["errors"])


@dataclass
class LabelSetDetectors:
    """A multi-label task's detectors, one ADWIN per label in each family: its rate (0/1:
    the served set carries it), its confidence (its score) and its error rate.

    The error is per label, 0/1 (served and true sets disagree on the label), rather than
    one exact-set match per item: with many labels an exact match fails on any single miss,
    so its rate sits high and barely moves when one label degrades; a mean over the labels
    (Hamming loss) shrinks one label's shift by the label count. Per label, the shift shows
    at full size and the drift event names the label.
    """

    rates: dict[str, MeanShift]
    confidence: dict[str, MeanShift]
    errors: dict[str, MeanShift]

    def all(self) -> list[Detector]:
        """Every detector of the task, family by family."""
        return [*self.rates.values(), *self.confidence.values(), *self.errors.values()]

    def observe(self, answer: Gold, scores: TaskScore | None) -> list[Detector]:
        """One prediction (the labels served and every label's score); returns the detectors
        that drifted."""
        if isinstance(answer, str):
            return []  # not this kind's answer (read_prediction refuses those)
        carried = set(answer)
        per_label = scores if isinstance(scores, Mapping) else {}
        drifted: list[Detector] = []
        for label, rate in self.rates.items():
            rate.update(1.0 if label in carried else 0.0)
            updated = [rate]
            if label in per_label:
                self.confidence[label].update(per_label[label])
                updated.append(self.confidence[label])
            drifted += [d for d in updated if d.drift_detected]
        return drifted

    def error(self, served: Gold, true: Gold) -> list[Detector]:
        """One feedback label set against the served one; returns the detectors that
        drifted."""
        if isinstance(served, str) or isinstance(true, str):
            return []
        served_set, true_set = set(served), set(true)
        drifted: list[Detector] = []
        for label, errors in self.errors.items():
            errors.update(float((label in served_set) != (label in true_set)))
            if errors.drift_detected:
                drifted.append(errors)
        return drifted

    def to_state(self) -> dict[str, Any]:
        """Every detector's state, by family and label."""
        return {
            family: {label: d.to_state() for label, d in detectors.items()}
            for family, detectors in self._families().items()
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()` of the same task's detectors."""
        for family, detectors in self._families().items():
            saved = state[family]
            if set(saved) != set(detectors):
                raise SnapshotError(f"{family} detectors of other labels")
            for label, d in detectors.items():
                d.load_state(saved[label])

    def _families(self) -> dict[str, dict[str, MeanShift]]:
        return {"rates": self.rates, "confidence": self.confidence, "errors": self.errors}


AnyTaskDetectors = TaskDetectors | LabelSetDetectors


def task_detectors(task: TaskHead, *, delta: float, grace: int) -> AnyTaskDetectors:
    """The detectors a task of this kind gets."""
    if not task.multilabel:
        return TaskDetectors(
            MeanShift(f"{task.name}.confidence", delta=delta, grace=grace),
            LabelMix(f"{task.name}.label_mix", task.labels, delta=delta, grace=grace),
            MeanShift(f"{task.name}.error_rate", delta=delta, grace=grace),
        )
    per_label = delta / max(1, len(task.labels))

    def family(what: str) -> dict[str, MeanShift]:
        return {
            label: MeanShift(f"{task.name}.{what}:{label}", delta=per_label, grace=grace)
            for label in task.labels
        }

    return LabelSetDetectors(family("label_rate"), family("confidence"), family("error_rate"))
