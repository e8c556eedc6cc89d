"""The python-backend model: its grouping of ragged requests (Triton's utils faked: they
exist only inside Triton's stub; the real server runs this file in test_triton.py), and
its installation into exported versions."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from serving.triton.repository import install_python_model
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def python_model() -> types.ModuleType:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    from serving.triton import python_model

    return python_model


def padded_cells(shapes: list[tuple[int, int]], group: list[int]) -> int:
    return sum(shapes[i][0] for i in group) * max(shapes[i][1] for i in group)


def test_chunks_of_different_widths_run_apart(python_model: types.ModuleType) -> None:
    # One worker's length-sorted chunks of 16: merged, the short ones would be padded to 60.
    shapes = [(16, 12), (16, 20), (16, 31), (16, 60)]
    assert python_model.padding_groups(shapes) == [[0], [1], [2], [3]]


def test_requests_of_similar_width_are_merged(python_model: types.ModuleType) -> None:
    # Two workers' chunks arrive interleaved; those of similar width share a run (one
    # short text costs little padding beside 32 wider ones).
    shapes = [(16, 20), (16, 58), (16, 21), (16, 60), (1, 12)]
    groups = python_model.padding_groups(shapes)
    assert sorted(sorted(g) for g in groups) == [[0, 2, 4], [1, 3]]
    for group in groups:
        own = sum(shapes[i][0] * shapes[i][1] for i in group)
        assert padded_cells(shapes, group) <= (1 + python_model.MAX_MERGE_WASTE) * own


def test_every_request_is_in_exactly_one_group(python_model: types.ModuleType) -> None:
    shapes = [(n % 7 + 1, 5 + (n * 37) % 90) for n in range(40)]
    groups = python_model.padding_groups(shapes)
    assert sorted(i for g in groups for i in g) == list(range(40))
    assert python_model.padding_groups([]) == []


def test_an_older_model_py_is_replaced_and_a_current_one_kept(tmp_path: Path) -> None:
    shipped = (REPO_ROOT / "serving" / "triton" / "python_model.py").read_bytes()
    old = tmp_path / "1"
    old.mkdir()
    (old / "model.py").write_text("# an older release's serving code\n")
    assert install_python_model(old) is True
    assert (old / "model.py").read_bytes() == shipped
    assert install_python_model(old) is False  # already current: left as it is
    missing = tmp_path / "2"
    missing.mkdir()
    assert install_python_model(missing) is True
    assert list((missing / "__pycache__").glob("model.*.pyc"))
