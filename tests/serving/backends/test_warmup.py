"""Warm-up batches: representative lengths, and a follower that warms before it swaps."""

from __future__ import annotations

from collections.abc import Sequence

from serving.backends.contract import InferenceError, ModelInfo, Prediction
from serving.backends.hot_swap import FollowingClassifier
from serving.backends.warmup import warm_up, warmup_texts
from serving.tasks import DEFAULT_TASKS


def test_warmup_batches_grow_from_short_texts_to_the_window() -> None:
    batches = warmup_texts(max_length=64, batch=8, batches=3)
    assert [len(b) for b in batches] == [8, 8, 8]
    words = [len(b[0].split()) for b in batches]
    assert words == sorted(words) and words[-1] == 64 and words[0] < 32
    assert warmup_texts(64, 8, 0) == []


class Recording:
    """Records the batch sizes it classified; `fail` makes classify raise."""

    def __init__(self, version: int, fail: bool = False) -> None:
        self.version = version
        self.fail = fail
        self.seen: list[int] = []
        self.closed = False

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("m", str(self.version), "fake", DEFAULT_TASKS, 16)

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if self.fail:
            raise InferenceError("cannot run", retriable=False)
        self.seen.append(len(texts))
        return [Prediction(tasks={}, truncated=False) for _ in texts]

    async def close(self) -> None:
        self.closed = True


async def test_warm_up_classifies_every_batch() -> None:
    backend = Recording(1)
    await warm_up(backend, batch=4, batches=2)
    assert backend.seen == [4, 4]


async def test_the_follower_warms_a_new_version_before_serving_it() -> None:
    served = [1]
    opened: dict[int, Recording] = {}

    def open_version(version: int) -> Recording:
        opened[version] = Recording(version, fail=version == 3)
        return opened[version]

    follower = FollowingClassifier(
        open_version, lambda: served[-1], check_s=0.0, warmup_batch=4, warmup_batches=2
    )
    served.append(2)
    await follower.classify(["live"])
    assert opened[2].seen == [4, 4, 1], "warm-up batches first, then the live one"
    served.append(3)  # fails its warm-up: closed, version 2 keeps serving
    await follower.classify(["live"])
    assert follower.info.version == "2" and opened[3].closed and not opened[2].closed
