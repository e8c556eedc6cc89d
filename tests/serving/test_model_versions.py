"""Served, candidate and retired versions, and a classifier that follows the served one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from serving.backends.contract import ModelInfo, Prediction
from serving.backends.hot_swap import FollowingClassifier
from serving.model_store import (
    CANDIDATES_DIR,
    MANIFEST,
    RETIRED_DIR,
    ModelNotFoundError,
    next_version,
    promote_version,
    retire_newest,
    serving_version,
    version_states,
)
from serving.tasks import DEFAULT_TASKS

NAME = "m"


def make_version(
    repo: Path,
    version: int,
    *,
    candidate: bool = False,
    retired: bool = False,
    **manifest: Any,
) -> Path:
    """A version directory with a manifest (plus `manifest`'s keys); where it went."""
    home = repo / NAME
    home = home / CANDIDATES_DIR if candidate else home / RETIRED_DIR if retired else home
    path = home / str(version)
    path.mkdir(parents=True)
    doc = {"name": NAME, "version": version, "tasks": [], "max_length": 8, **manifest}
    (path / MANIFEST).write_text(json.dumps(doc))
    return path


def test_a_candidate_is_not_served_until_promoted(tmp_path: Path) -> None:
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, candidate=True)
    assert serving_version(tmp_path, NAME) == 1
    assert next_version(tmp_path, NAME) == 3  # candidates keep their numbers
    promote_version(tmp_path, NAME, 2)
    assert serving_version(tmp_path, NAME) == 2
    assert [(s, v.version) for s, v in version_states(tmp_path, NAME)] == [
        ("previous", 1),
        ("served", 2),
    ]


def test_rollback_retires_the_served_version_and_it_can_come_back(tmp_path: Path) -> None:
    make_version(tmp_path, 1)
    make_version(tmp_path, 2)
    retired, served = retire_newest(tmp_path, NAME)
    assert (retired.version, served.version) == (2, 1)
    assert serving_version(tmp_path, NAME) == 1
    assert next_version(tmp_path, NAME) == 3
    assert ("retired", 2) in [(s, v.version) for s, v in version_states(tmp_path, NAME)]
    promote_version(tmp_path, NAME, 2)
    assert serving_version(tmp_path, NAME) == 2


def test_rollback_needs_a_version_to_return_to(tmp_path: Path) -> None:
    make_version(tmp_path, 1)
    with pytest.raises(ModelNotFoundError, match="nothing to roll back to"):
        retire_newest(tmp_path, NAME)


def test_only_a_version_newer_than_the_served_one_can_be_promoted(tmp_path: Path) -> None:
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, candidate=True)
    make_version(tmp_path, 3)
    with pytest.raises(ValueError, match="older than the served version 3"):
        promote_version(tmp_path, NAME, 2)
    with pytest.raises(ModelNotFoundError, match="no candidate or retired version 9"):
        promote_version(tmp_path, NAME, 9)


class FakeBackend:
    """One version's classifier, behind the Classifier contract."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.closed = False

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(NAME, str(self.version), "int8", DEFAULT_TASKS, 8)

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        assert not self.closed, "classified on a closed backend"
        return [Prediction(tasks={}, truncated=False) for _ in texts]

    async def close(self) -> None:
        self.closed = True


async def test_the_following_classifier_switches_between_batches_and_closes_the_old() -> None:
    served = [1]
    opened: list[FakeBackend] = []

    def open_version(version: int) -> FakeBackend:
        if version == 99:
            raise RuntimeError("broken version")
        opened.append(FakeBackend(version))
        return opened[-1]

    follower = FollowingClassifier(open_version, lambda: served[-1], check_s=0.0)
    await follower.classify(["a"])
    assert follower.info.version == "1" and follower.swaps == 0
    served.append(2)
    await follower.classify(["a"])
    assert follower.info.version == "2" and opened[0].closed and follower.swaps == 1
    served.append(99)  # a version that fails to load: keep serving the one that works
    await follower.classify(["a"])
    assert follower.info.version == "2" and not opened[1].closed
    await follower.close()
    assert opened[1].closed


def test_following_needs_a_served_version() -> None:
    with pytest.raises(FileNotFoundError, match="no served model version"):
        FollowingClassifier(FakeBackend, lambda: None)


def test_check_interval_limits_how_often_the_repository_is_asked() -> None:
    asks: list[int] = []

    def served() -> int:
        asks.append(1)
        return 1

    follower = FollowingClassifier(FakeBackend, served, check_s=3600)
    asyncio.run(follower.classify(["a"]))
    asyncio.run(follower.classify(["b"]))
    assert len(asks) == 1  # the constructor's question only
