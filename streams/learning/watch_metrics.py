"""The model watch's gauges, set from its state: detectors, join sizes, prequential
accuracy of the hybrid head, the job in flight and the back-off."""

from __future__ import annotations

from online.model_watch import ModelWatch
from streams.metrics import WatchMetrics


def export_watch_metrics(m: WatchMetrics, w: ModelWatch) -> None:
    """Set every gauge of `m` from what `w` holds now."""
    for det in w.detectors():
        state = det.state()
        m.drift_statistic.labels(det.name).set(state.get("statistic", 0.0))
        m.drift_threshold.labels(det.name).set(state.get("threshold", 0.0))
        m.drift_window.labels(det.name).set(state.get("window", 0.0))
        if "z" in state:
            m.drift_score.labels(det.name).set(state["z"])
    kept, waiting = w.join.sizes
    m.kept.set(kept)
    m.waiting.set(waiting)
    kept_bytes, waiting_bytes = w.join.bytes
    m.join_bytes.labels("predictions").set(kept_bytes)
    m.join_bytes.labels("waiting").set(waiting_bytes)
    # The hybrid head's tasks: multi-label ones have none.
    for task in w.hybrid.tasks:
        for learner, value in w.hybrid.accuracy(task).items():
            m.accuracy.labels(task, learner).set(value)
    if w.version is not None and w.version.isdigit():
        m.watched_version.set(int(w.version))
    m.job_in_flight.set(1 if w.policy.in_flight is not None else 0)
    m.job_not_before.set(w.policy.not_before)
    m.rejections.set(w.policy.rejections)
