"""The model watch's state as a snapshot tree, and a watch rebuilt from one.

`watch_snapshot` captures a `ModelWatch` for `online.watch_state.write_snapshot`;
`restored_watch` resumes one from what `read_snapshot` gives back. Both lay out the
watch's own fields, its private bookkeeping included: this module is the other half of
`online.model_watch`, not a client of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from online.feedback import label_column, label_set_column, labels_of_columns
from online.feedback_records import Feedback
from online.jobs import Decision
from online.model_watch import ModelWatch, TrainingRow, WatchConfig, WatchCounts
from online.watch_state import Deferred, SnapshotError, TextColumn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _RowsCopy(Deferred):
    rows: dict[str, list[TrainingRow]]

    def to_state(self) -> dict[str, Any]:
        """Each task's rows as columns: a multi-label task's label sets in `labels`
        (snapshots taken before those existed have only `label`)."""
        return {
            task: {
                "text": TextColumn([r.text for r in rows]),
                "label": label_column([r.label for r in rows]),
                "labels": label_set_column([r.label for r in rows]),
                "seq": np.array([r.seq for r in rows], dtype=np.int64),
            }
            for task, rows in self.rows.items()
        }


def _detector_settings(config: WatchConfig) -> dict[str, Any]:
    """What the detectors and the hybrid head are built from: a snapshot's detectors are
    resumed only under the same settings."""
    return {
        # A multi-label task's detectors differ in kind; multi-class entries are as before
        # kinds existed, so those snapshots resume their detectors.
        "tasks": [
            [t.name, list(t.labels), *([t.kind] if t.multilabel else [])] for t in config.tasks
        ],
        "drift": [config.drift_delta, config.drift_grace],
        "mmd": [
            config.mmd_reference,
            config.mmd_window,
            config.mmd_check_every,
            config.mmd_z,
            config.mmd_permutations,
        ],
        "hybrid": [config.hybrid_learning_rate, config.hybrid_window],
    }


def watch_snapshot(watch: ModelWatch) -> dict[str, Any]:
    """The whole state for `online.watch_state.write_snapshot`. Cheap enough for the
    event loop (river objects are pickled here, big parts are copied containers of
    immutable records, laid out later by their `to_state()`), and independent of the
    watch from here on."""
    decision = watch.last_decision
    return {
        "model": watch.config.model,
        "detector_settings": _detector_settings(watch.config),
        "counts": dataclasses.asdict(watch.counts),
        "version": watch.version,
        "last_decision": json.loads(decision.encode()) if decision else None,
        "seq": watch._seq,
        "trigger_seq": watch._trigger_seq,
        "job_since": watch._job_since,
        "rows": _RowsCopy({task: list(rows) for task, rows in watch.rows.items()}),
        "join": watch.join.snapshot(),
        "policy": watch.policy.to_state(),
        "detectors": {
            "tasks": {task: d.to_state() for task, d in watch.tasks.items()},
            "embedding": watch.embedding.to_state(),
        },
        "hybrid": watch.hybrid.to_state(),
    }


def restored_watch(config: WatchConfig, state: dict[str, Any]) -> tuple[ModelWatch, list[Feedback]]:
    """A watch resumed from `watch_snapshot()` under `config` (this run's settings: the
    join's caps and the policy's knobs apply to the restored contents). Detectors and the
    hybrid head are resumed only if their settings are unchanged. Also returns waiting
    feedback that no longer fits (another task set, smaller caps), already kept as rows
    where it carries text: the rest is to be dead-lettered. SnapshotError if the state is
    bad."""
    try:
        return _restore(config, state)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise SnapshotError(f"bad watch state: {type(exc).__name__}: {exc}") from exc


def _restore(config: WatchConfig, state: dict[str, Any]) -> tuple[ModelWatch, list[Feedback]]:
    if state["model"] != config.model:
        raise SnapshotError(f"the state is of model {state['model']!r}, not {config.model!r}")
    watch = ModelWatch(config)
    known = {f.name for f in dataclasses.fields(WatchCounts)}
    watch.counts = WatchCounts(**{k: int(v) for k, v in state["counts"].items() if k in known})
    version = state["version"]
    watch.version = None if version is None else str(version)
    decision = state["last_decision"]
    watch.last_decision = Decision.decode(json.dumps(decision).encode()) if decision else None
    watch._seq = int(state["seq"])
    watch._trigger_seq = _optional_int(state["trigger_seq"])
    watch._job_since = _optional_int(state["job_since"])
    _load_rows(watch, state["rows"])
    left_out = watch.join.load_state(state["join"], tasks=set(watch.tasks))
    watch.policy.load_state(state["policy"])
    if state["detector_settings"] == _detector_settings(config):
        _load_detectors(watch, state["detectors"], state["hybrid"])
    else:
        log.warning(
            "the detector or hybrid head settings changed since the snapshot: "
            "detectors and the hybrid head start afresh (the join, rows and policy resume)"
        )
    back = [fb for fb in left_out if fb.task not in watch.tasks or watch._unmatched(fb) is not None]
    return watch, back


def _load_rows(watch: ModelWatch, rows: dict[str, Any]) -> None:
    """The kept rows of the watched tasks (a task no longer watched is left out)."""
    for task, columns in rows.items():
        if task not in watch.rows:
            continue
        texts, seqs = columns["text"], columns["seq"]
        labels = labels_of_columns(columns["label"], columns.get("labels"))
        if not len(texts) == len(labels) == len(seqs) or None in labels:
            raise SnapshotError(f"rows of {task!r}: columns of different lengths or no label")
        watch.rows[task].extend(
            TrainingRow(str(t), lab, int(q))
            for t, lab, q in zip(texts, labels, seqs, strict=True)
            if lab is not None
        )


def _load_detectors(watch: ModelWatch, detectors: dict[str, Any], hybrid: Any) -> None:
    """Every detector and the hybrid head, resumed (their settings are unchanged)."""
    for task, d in watch.tasks.items():
        d.load_state(detectors["tasks"][task])
    watch.embedding.load_state(detectors["embedding"])
    watch.hybrid.load_state(hybrid)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
