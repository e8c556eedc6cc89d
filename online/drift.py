"""Drift detectors on what the served model sees and says.

Each detector is a small class in river's style: `update()` changes its state and
`drift_detected` answers whether the latest update completed a drift. `state()` gives the
figures exported as metrics and published with a drift event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from river import drift as river_drift

from online.watch_state import SnapshotError, dumps_river, loads_river

Vector = npt.NDArray[np.float32]


class Detector(Protocol):
    """What the model watch needs from a detector."""

    name: str

    @property
    def drift_detected(self) -> bool:
        """Whether the latest update completed a drift."""
        ...

    def state(self) -> dict[str, float]:
        """Current figures: the statistic, its threshold and the window sizes."""
        ...

    def reset(self) -> None:
        """Forget everything (a new model version makes old observations incomparable)."""
        ...


class MeanShift:
    """ADWIN on a bounded scalar stream (prediction confidence, 0/1 errors).

    ADWIN keeps the longest window whose halves agree; a cut means the mean moved. `delta`
    is its confidence: smaller is fewer false alarms and later detection.
    """

    def __init__(self, name: str, *, delta: float = 1e-5, grace: int = 100) -> None:
        self.name = name
        self.delta = delta
        self.grace = grace
        self._adwin = river_drift.ADWIN(delta=delta, grace_period=grace)
        self._before = 0.0
        self._seen = 0
        self.drift_detected = False

    def update(self, value: float) -> None:
        """Add one observation."""
        before = self._adwin.estimation
        self._adwin.update(float(value))
        self._seen += 1
        self.drift_detected = bool(self._adwin.drift_detected)
        if self.drift_detected:
            self._before = before

    def state(self) -> dict[str, float]:
        """The window's mean and width; after a drift, the mean before the cut."""
        return {
            "statistic": float(self._adwin.estimation),
            "previous": self._before,
            "window": float(self._adwin.width),
            "seen": float(self._seen),
            "threshold": self.delta,
        }

    def reset(self) -> None:
        """Start a fresh window."""
        self._adwin = river_drift.ADWIN(delta=self.delta, grace_period=self.grace)
        self._seen = 0
        self.drift_detected = False

    def to_state(self) -> dict[str, Any]:
        """Everything needed to go on where this left off (ADWIN pickled)."""
        return {
            "delta": self.delta,
            "grace": self.grace,
            "adwin": dumps_river(self._adwin),
            "before": self._before,
            "seen": self._seen,
            "drift_detected": self.drift_detected,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()` of a detector with the same delta and grace."""
        if (state["delta"], state["grace"]) != (self.delta, self.grace):
            raise SnapshotError(f"{self.name}: the snapshot's delta or grace differs")
        adwin = loads_river(state["adwin"])
        if not isinstance(adwin, river_drift.ADWIN):
            raise SnapshotError(f"{self.name}: not an ADWIN")
        self._adwin = adwin
        self._before = float(state["before"])
        self._seen = int(state["seen"])
        self.drift_detected = bool(state["drift_detected"])


class LabelMix:
    """The share of each label, one ADWIN per label (Bonferroni-split confidence)."""

    def __init__(
        self, name: str, labels: Sequence[str], *, delta: float = 1e-5, grace: int = 100
    ) -> None:
        self.name = name
        self.labels = tuple(labels)
        per_label = delta / max(1, len(self.labels))
        self._shares = {
            lab: MeanShift(f"{name}:{lab}", delta=per_label, grace=grace) for lab in labels
        }
        self.moved: str | None = None
        self.drift_detected = False

    def update(self, label: str) -> None:
        """Add one predicted label."""
        self.drift_detected = False
        for lab, share in self._shares.items():
            share.update(1.0 if lab == label else 0.0)
            if share.drift_detected and not self.drift_detected:
                self.drift_detected = True
                self.moved = lab

    def state(self) -> dict[str, float]:
        """Each label's current share, and the window width."""
        out = {f"share_{lab}": s.state()["statistic"] for lab, s in self._shares.items()}
        first = next(iter(self._shares.values()))
        out["window"] = first.state()["window"]
        out["threshold"] = first.delta
        if self.moved is not None:
            moved = self._shares[self.moved].state()
            out["statistic"] = moved["statistic"]
            out["previous"] = moved["previous"]
        return out

    def reset(self) -> None:
        """Start fresh windows for every label."""
        for share in self._shares.values():
            share.reset()
        self.moved = None
        self.drift_detected = False

    def to_state(self) -> dict[str, Any]:
        """Each label's window, and which label moved last."""
        return {
            "labels": list(self.labels),
            "shares": {lab: s.to_state() for lab, s in self._shares.items()},
            "moved": self.moved,
            "drift_detected": self.drift_detected,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()` of a detector over the same labels."""
        if list(state["labels"]) != list(self.labels):
            raise SnapshotError(f"{self.name}: the snapshot's labels differ")
        for lab, share in self._shares.items():
            share.load_state(state["shares"][lab])
        moved = state["moved"]
        self.moved = moved if moved in self._shares else None
        self.drift_detected = bool(state["drift_detected"])


@dataclass
class _MmdTest:
    statistic: float
    z: float
    p_value: float


def _rbf(x: Vector, y: Vector, gamma: float) -> Vector:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    out: Vector = np.exp(-gamma * np.maximum(sq, 0.0)).astype(np.float32)
    return out


def mmd_permutation_test(
    reference: Vector, recent: Vector, gamma: float, permutations: int, rng: np.random.Generator
) -> _MmdTest:
    """Squared MMD (biased, RBF kernel) and its permutation null: z-score and p-value."""
    pooled = np.concatenate([reference, recent])
    kernel = _rbf(pooled, pooled, gamma).astype(np.float64)
    n, m = len(reference), len(recent)
    total = n + m

    def weights(member: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        return np.where(member, 1.0 / n, -1.0 / m)

    observed_w = weights(np.arange(total) < n)
    observed = float(observed_w @ kernel @ observed_w)
    # Every column is one random relabelling of the pooled sample.
    order = np.argsort(rng.random((total, permutations)), axis=0)
    null_w = weights(order < n)
    null = np.einsum("ip,ip->p", null_w, kernel @ null_w)
    std = float(null.std()) or 1e-12
    z = (observed - float(null.mean())) / std
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return _MmdTest(observed, z, p_value)


def median_gamma(sample: Vector) -> float:
    """RBF width from the median pairwise squared distance (the usual heuristic)."""
    sq = (
        (sample * sample).sum(1)[:, None]
        + (sample * sample).sum(1)[None, :]
        - 2 * sample @ sample.T
    )
    upper = sq[np.triu_indices(len(sample), k=1)]
    median = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
    return 1.0 / median


@dataclass
class EmbeddingShift:
    """Two-sample MMD test between a reference window of embeddings and the recent window.

    The first `reference_size` embeddings are the reference; every `check_every` items the
    last `window_size` are tested against it with a permutation test. Drift needs the
    observed MMD to beat every permutation and sit `z_threshold` null deviations above the
    null mean: one test every `check_every` items makes a plain 5% level alarm constantly.
    """

    name: str = "embedding"
    reference_size: int = 500
    window_size: int = 200
    check_every: int = 50
    z_threshold: float = 6.0
    permutations: int = 200
    seed: int = 0
    drift_detected: bool = False
    _reference: list[Vector] = field(default_factory=list)
    _recent: deque[Vector] = field(default_factory=deque)
    _since_check: int = 0
    _gamma: float = 0.0
    _last: _MmdTest | None = None
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.window_size > self.reference_size:
            raise ValueError("the recent window cannot be larger than the reference window")
        self._rng = np.random.default_rng(self.seed)
        self._recent = deque(maxlen=self.window_size)

    def update(self, embedding: Vector) -> None:
        """Add one embedding; runs a test every `check_every` items once both windows fill."""
        self.drift_detected = False
        vec = np.asarray(embedding, dtype=np.float32)
        if len(self._reference) < self.reference_size:
            self._reference.append(vec)
            if len(self._reference) == self.reference_size:
                self._gamma = median_gamma(np.stack(self._reference))
            return
        self._recent.append(vec)
        self._since_check += 1
        if len(self._recent) < self.window_size or self._since_check < self.check_every:
            return
        self._since_check = 0
        self._last = mmd_permutation_test(
            np.stack(self._reference),
            np.stack(self._recent),
            self._gamma,
            self.permutations,
            self._rng,
        )
        self.drift_detected = self._last.z >= self.z_threshold and self._last.p_value <= 1 / (
            1 + self.permutations
        )
        if self.drift_detected:
            # The shifted data becomes the new normal: refill the reference from here on.
            last = self._last
            self.reset()
            self._last = last
            self.drift_detected = True

    def state(self) -> dict[str, float]:
        """The last test's MMD², z-score and p-value, and how full the windows are."""
        last = self._last
        return {
            "statistic": last.statistic if last else 0.0,
            "z": last.z if last else 0.0,
            "p_value": last.p_value if last else 1.0,
            "threshold": self.z_threshold,
            "reference": float(len(self._reference)),
            "window": float(len(self._recent)),
        }

    def reset(self) -> None:
        """Drop both windows; the next embeddings rebuild the reference."""
        self._reference = []
        self._recent = deque(maxlen=self.window_size)
        self._since_check = 0
        self._last = None
        self.drift_detected = False

    def _params(self) -> list[float]:
        return [
            self.reference_size,
            self.window_size,
            self.check_every,
            self.z_threshold,
            self.permutations,
        ]

    def to_state(self) -> dict[str, Any]:
        """Both windows (as arrays), the kernel width, the last test and the RNG."""
        last = self._last
        return {
            "params": self._params(),
            "reference": _stack(self._reference),
            "recent": _stack(list(self._recent)),
            "since_check": self._since_check,
            "gamma": self._gamma,
            "last": [last.statistic, last.z, last.p_value] if last else None,
            "rng": self._rng.bit_generator.state,
            "drift_detected": self.drift_detected,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `to_state()` of a test with the same windows and thresholds."""
        if list(state["params"]) != self._params():
            raise SnapshotError(f"{self.name}: the snapshot's windows or thresholds differ")
        reference, recent = state["reference"], state["recent"]
        if len(reference) > self.reference_size or len(recent) > self.window_size:
            raise SnapshotError(f"{self.name}: windows larger than their sizes")
        self._reference = [np.array(row, dtype=np.float32) for row in reference]
        self._recent = deque(
            (np.array(row, dtype=np.float32) for row in recent), maxlen=self.window_size
        )
        self._since_check = int(state["since_check"])
        self._gamma = float(state["gamma"])
        last = state["last"]
        self._last = _MmdTest(*(float(v) for v in last)) if last else None
        self._rng.bit_generator.state = state["rng"]
        self.drift_detected = bool(state["drift_detected"])


def _stack(vectors: Sequence[Vector]) -> Vector:
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    out: Vector = np.stack(vectors).astype(np.float32, copy=False)
    return out


def detector_event_fields(detector: Detector) -> dict[str, Any]:
    """The detector's name and figures, as published with a drift event."""
    return {"detector": detector.name, **{k: round(v, 6) for k, v in detector.state().items()}}
