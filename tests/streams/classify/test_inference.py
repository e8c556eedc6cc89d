"""The inference step under an absent backend: retries, abandonment, and a fallback that
never dead-letters for the server's absence."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from serving.backends.contract import InferenceError, ModelInfo, Prediction
from serving.tasks import DEFAULT_TASKS
from streams.classify.batching import FetchGate
from streams.classify.inference import BatchAbandonedError, InferenceStep
from streams.messages import FeedItem, Origin
from streams.metrics import WorkerMetrics


class ScriptedClassifier:
    """Raises the scripted errors in turn (None: answer), then answers every call."""

    info = ModelInfo("m", "1", "fake", DEFAULT_TASKS, 16)

    def __init__(self, script: Sequence[InferenceError | None] = (), hang: bool = False) -> None:
        self.script = list(script)
        self.hang = hang
        self.calls: list[int] = []

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls.append(len(texts))
        if self.hang:
            await asyncio.Event().wait()  # a server that never answers
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error
        return [Prediction(tasks={}, truncated=False) for _ in texts]

    async def close(self) -> None:
        pass


def away() -> InferenceError:
    return InferenceError("server away", retriable=True)


def broken() -> InferenceError:
    return InferenceError("bad input", retriable=False)


def items(n: int) -> list[FeedItem]:
    return [
        FeedItem(id=f"i{k}", text=f"text {k}", origin=Origin("feeds.raw", 0, k)) for k in range(n)
    ]


def step_for(classifier: ScriptedClassifier, stopping: bool = False) -> InferenceStep:
    return InferenceStep(
        classifier, WorkerMetrics(CollectorRegistry()), lambda: stopping, FetchGate()
    )


async def test_retriable_errors_are_retried_until_the_backend_answers() -> None:
    classifier = ScriptedClassifier([away(), away()])
    done, failed = await step_for(classifier).classify(items(3))
    assert len(done) == 3 and not failed
    assert classifier.calls == [3, 3, 3]


async def test_the_fallback_retries_a_backend_that_goes_away_instead_of_dead_lettering() -> None:
    # The batch fails for its content, then the server goes away during the one-by-one pass.
    classifier = ScriptedClassifier([broken(), None, away(), away(), None, broken()])
    done, failed = await step_for(classifier).classify(items(3))
    assert [it.id for it, _ in done] == ["i0", "i1"]
    assert [r.id for r in failed] == ["i2"], "only the item the backend refused is rejected"


async def test_abandon_gives_up_a_batch_waiting_on_an_absent_backend() -> None:
    step = step_for(ScriptedClassifier([away()] * 1000))
    task = asyncio.create_task(step.classify(items(2)))
    await asyncio.sleep(0.3)  # several retries in
    step.abandon()
    with pytest.raises(BatchAbandonedError) as raised:
        await asyncio.wait_for(task, 2)
    assert not raised.value.stopping


@pytest.mark.parametrize("resumed_at_once", [False, True])
async def test_abandon_cancels_a_call_that_hangs_and_resume_classifies_again(
    resumed_at_once: bool,
) -> None:
    classifier = ScriptedClassifier(hang=True)
    step = step_for(classifier)
    task = asyncio.create_task(step.classify(items(2)))
    await asyncio.sleep(0.1)
    step.abandon()
    if resumed_at_once:
        # A rebalance can settle before the call notices: it still ends abandoned, never
        # with the cancellation of its backend call leaking out.
        step.resume()
    with pytest.raises(BatchAbandonedError):
        await asyncio.wait_for(task, 2)
    classifier.hang = False
    step.resume()
    done, _ = await asyncio.wait_for(step.classify(items(1)), 2)
    assert len(done) == 1


async def test_stopping_abandons_with_stopping_set() -> None:
    step = step_for(ScriptedClassifier([away()]), stopping=True)
    with pytest.raises(BatchAbandonedError) as raised:
        await step.classify(items(1))
    assert raised.value.stopping
