"""A job fitted to a byte budget keeps each task's newest rows, the same share of each, and
its encoded record is never over the budget."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online.jobs import FineTuneJob
from serving.tasks import Gold


def big_job() -> FineTuneJob:
    """5,000 rows of 20,000 random hex characters (gzip halves them, no more), oldest first."""
    rows: list[tuple[str, Gold]] = [
        (f"{i:05d} {os.urandom(9_997).hex()}", "neutral") for i in range(5000)
    ]
    return FineTuneJob("m", 1, {"sentiment": rows[:3000], "topic": rows[3000:]}, [{"d": "x"}])


def test_a_large_job_fits_a_mebibyte_keeping_the_newest_rows_of_each_task() -> None:
    job = big_job()
    started = time.monotonic()
    fitted = job.fitted(1 << 20)
    assert time.monotonic() - started < 10
    encoded = fitted.encode()
    assert len(encoded) <= 1 << 20
    kept = {task: len(rows) for task, rows in fitted.rows.items()}
    # About 70 rows fit; shares follow the tasks' sizes (3000 : 2000).
    assert 50 < sum(kept.values()) < 100
    assert abs(kept["sentiment"] / sum(kept.values()) - 0.6) < 0.05
    for task, rows in fitted.rows.items():
        assert rows == job.rows[task][-len(rows) :]
    assert fitted.rows_dropped_for_size == {
        task: len(job.rows[task]) - n for task, n in kept.items()
    }
    decoded = FineTuneJob.decode(encoded)
    assert decoded == fitted and decoded.id == job.id


def test_a_job_that_fits_is_left_as_it_is() -> None:
    job = FineTuneJob("m", 1, {"sentiment": [("a b c", "neutral")] * 100}, [])
    assert job.fitted(len(job.encode())) is job


def test_a_job_that_cannot_fit_even_without_rows_is_a_value_error() -> None:
    job = FineTuneJob("m", 1, {"sentiment": [("text", "neutral")]}, [{"why": "x" * 5000}])
    with pytest.raises(ValueError, match="without rows"):
        job.fitted(1000)


texts = st.text(min_size=1, max_size=300)
jobs = st.builds(
    FineTuneJob,
    model=st.just("m"),
    base_version=st.just(1),
    rows=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.lists(st.tuples(texts, st.sampled_from(["a", "b"])), max_size=40),
        max_size=3,
    ),
    reasons=st.just([]),
)


@settings(max_examples=150, deadline=None)
@given(jobs, st.integers(0, 6000))
def test_a_fitted_job_is_never_over_its_budget(job: FineTuneJob, extra: int) -> None:
    empty = len(job.keeping(0).encode())
    budget = empty + extra
    fitted = job.fitted(budget)
    assert len(fitted.encode()) <= budget
    for task, rows in fitted.rows.items():
        assert rows == job.rows[task][len(job.rows[task]) - len(rows) :]
        assert fitted.rows_dropped_for_size.get(task, 0) == len(job.rows[task]) - len(rows)
    if len(job.encode()) <= budget:
        assert fitted is job
    if len(job.encode()) < empty:
        assert job.fitted(empty - 1) is job
    else:
        with pytest.raises(ValueError):
            job.fitted(empty - 1)
