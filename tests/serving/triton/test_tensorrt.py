"""The TensorRT build step, up to where a GPU is needed (none here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving.triton.tensorrt import (
    ShapeProfile,
    TensorRTUnavailableError,
    plan_command,
    polygraphy_command,
    trtexec_command,
)


def test_trtexec_command_has_fp16_and_a_dynamic_profile_for_both_inputs() -> None:
    cmd = trtexec_command(Path("v/model.onnx"), Path("v/model.plan"), ShapeProfile())
    assert cmd[:4] == ["trtexec", "--onnx=v/model.onnx", "--saveEngine=v/model.plan", "--fp16"]
    assert "--minShapes=input_ids:1x1,attention_mask:1x1" in cmd
    assert "--optShapes=input_ids:16x64,attention_mask:16x64" in cmd
    assert "--maxShapes=input_ids:64x128,attention_mask:64x128" in cmd


def test_polygraphy_command_sets_the_same_profile() -> None:
    cmd = polygraphy_command(Path("m.onnx"), Path("m.plan"), ShapeProfile(max_batch=8))
    assert cmd[:3] == ["polygraphy", "convert", "m.onnx"] and "--fp16" in cmd
    assert cmd.count("--trt-max-shapes") == 2
    assert "input_ids:[8,128]" in cmd and "attention_mask:[1,1]" in cmd


def test_plan_command_uses_the_tools_present_or_says_what_would_run(tmp_path: Path) -> None:
    if shutil.which("trtexec") or shutil.which("polygraphy"):  # a GPU machine
        assert plan_command(tmp_path, ShapeProfile())[0] in ("trtexec", "polygraphy")
        return
    with pytest.raises(TensorRTUnavailableError, match="--fp16"):
        plan_command(tmp_path, ShapeProfile())
