"""Which job produced which version (the trainer's decision in the manifest), and cleaning
the repository: leftover staging directories and old rejected candidates go, nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.model_store import (
    CANDIDATES_DIR,
    DECISION_KEY,
    MANIFEST,
    STAGING_PREFIX,
    clean_repository,
    job_version,
    read_version,
    record_decision,
    version_states,
)
from tests.serving.test_model_versions import NAME, make_version


def decided(job_id: str, action: str, **extra: Any) -> dict[str, Any]:
    """A decision record as the trainer writes it."""
    return {"job_id": job_id, "model": NAME, "action": action, "reason": "why", **extra}


def test_a_recorded_decision_is_added_to_the_manifest_and_keeps_the_rest(tmp_path: Path) -> None:
    path = make_version(tmp_path, 2, candidate=True, training={"reason": "job j"})
    before = read_version(path).manifest
    record = decided("j", "rejected", figures={"fpb": {"served": 0.5, "candidate": 0.4}})
    after = record_decision(read_version(path), record).manifest
    assert after == {**before, DECISION_KEY: record}
    assert read_version(path).manifest == after
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST]  # no temporary file left


def test_the_version_a_job_produced_is_found_wherever_it_went(tmp_path: Path) -> None:
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, candidate=True, decision=decided("rejected-job", "rejected"))
    make_version(tmp_path, 3, decision=decided("served-job", "promoted"))
    make_version(tmp_path, 4, retired=True, decision=decided("retired-job", "promoted"))
    make_version(tmp_path, 5, candidate=True, training={"reason": "fine-tuning job other"})
    found = {
        job: (hit[0], hit[1].version) if (hit := job_version(tmp_path, NAME, job)) else None
        for job in ("rejected-job", "served-job", "retired-job", "other", "unknown")
    }
    assert found == {
        "rejected-job": ("candidate", 2),
        "served-job": ("served", 3),
        "retired-job": ("retired", 4),
        "other": None,  # a candidate without a decision record names no job
        "unknown": None,
    }
    assert job_version(tmp_path / "elsewhere", NAME, "served-job") is None


@pytest.fixture
def pids() -> Iterator[tuple[int, int]]:
    """(a process that has exited, one that is alive and not this one)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield done.pid, alive.pid
    finally:
        alive.kill()
        alive.wait()


def staging(home: Path, version: int, pid: int | str, payload: bytes = b"") -> Path:
    path = home / f"{STAGING_PREFIX}{version}-{pid}"
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "weights.bin").write_bytes(payload)
    return path


@pytest.mark.parametrize("keep", [0, 2, 10])
def test_clean_removes_leftover_staging_and_all_but_the_newest_rejections(
    tmp_path: Path, pids: tuple[int, int], keep: int
) -> None:
    dead, alive = pids
    model_dir = tmp_path / NAME
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, decision=decided("promoted-job", "promoted"))
    # Rejected, then promoted by hand and rolled back: retired versions always stay.
    make_version(tmp_path, 3, retired=True, decision=decided("old-job", "rejected"))
    rejected = [
        make_version(tmp_path, v, candidate=True, decision=decided(f"job-{v}", action))
        for v, action in ((4, "rejected"), (5, "skipped"), (6, "rejected"), (7, "rejected"))
    ]
    unrecorded = make_version(tmp_path, 8, candidate=True)
    awaiting = make_version(tmp_path, 9, candidate=True, decision=decided("job-9", "promoted"))
    payload = os.urandom(3000)
    leftovers = [
        staging(model_dir, 10, dead, payload),
        staging(model_dir / CANDIDATES_DIR, 11, os.getpid()),  # this process exports nothing
        staging(model_dir, 12, "not-a-pid"),
    ]
    in_flight = staging(model_dir / CANDIDATES_DIR, 13, alive)
    states_before = [(s, v.version) for s, v in version_states(tmp_path, NAME)]

    removed = clean_repository(tmp_path, NAME, keep_rejected=keep)

    dropped = rejected[: max(0, len(rejected) - keep)]
    assert sorted((r.kind, r.path) for r in removed) == sorted(
        [*(("rejected", p) for p in dropped), *(("staging", p) for p in leftovers)]
    )
    assert {r.path: r.size_bytes for r in removed}[leftovers[0]] == len(payload)
    assert not any(p.exists() for p in [*dropped, *leftovers])
    assert all(p.exists() for p in [*rejected[len(dropped) :], unrecorded, awaiting, in_flight])
    dropped_numbers = {int(p.name) for p in dropped}
    assert [(s, v.version) for s, v in version_states(tmp_path, NAME)] == [
        sv for sv in states_before if sv[1] not in dropped_numbers
    ]


def test_cleaning_a_missing_or_clean_repository_removes_nothing(tmp_path: Path) -> None:
    assert clean_repository(tmp_path, NAME, keep_rejected=0) == []
    make_version(tmp_path, 1)
    assert clean_repository(tmp_path, NAME, keep_rejected=0) == []
    assert [v.version for _, v in version_states(tmp_path, NAME)] == [1]
