"""Build a TensorRT FP16 engine (model.plan) from an exported version, on a GPU machine."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from serving.model_store import FP32_FILE

PLAN_FILE = "model.plan"
INPUTS = ("input_ids", "attention_mask")


class TensorRTUnavailableError(RuntimeError):
    """Neither trtexec nor Polygraphy is installed (they come with TensorRT, on GPU machines)."""


@dataclass(frozen=True)
class ShapeProfile:
    """The (batch, sequence) shapes the engine is optimised for and accepts."""

    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    min_seq: int = 1
    opt_seq: int = 64
    max_seq: int = 128

    def shapes(self, which: str) -> str:
        """trtexec shape spec for every input, e.g. `input_ids:16x64,attention_mask:16x64`."""
        batch, seq = {
            "min": (self.min_batch, self.min_seq),
            "opt": (self.opt_batch, self.opt_seq),
            "max": (self.max_batch, self.max_seq),
        }[which]
        return ",".join(f"{name}:{batch}x{seq}" for name in INPUTS)


def trtexec_command(onnx: Path, plan: Path, profile: ShapeProfile) -> list[str]:
    """The trtexec command line building an FP16 engine with a dynamic shape profile."""
    return [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        "--fp16",
        f"--minShapes={profile.shapes('min')}",
        f"--optShapes={profile.shapes('opt')}",
        f"--maxShapes={profile.shapes('max')}",
    ]


def polygraphy_command(onnx: Path, plan: Path, profile: ShapeProfile) -> list[str]:
    """The Polygraphy equivalent, for machines with the TensorRT Python API but no trtexec."""
    cmd = ["polygraphy", "convert", str(onnx), "--convert-to", "trt", "--fp16", "-o", str(plan)]
    for name in INPUTS:
        cmd += [
            "--trt-min-shapes",
            f"{name}:[{profile.min_batch},{profile.min_seq}]",
            "--trt-opt-shapes",
            f"{name}:[{profile.opt_batch},{profile.opt_seq}]",
            "--trt-max-shapes",
            f"{name}:[{profile.max_batch},{profile.max_seq}]",
        ]
    return cmd


def plan_command(version_dir: Path, profile: ShapeProfile) -> list[str]:
    """The build command for this machine: trtexec if present, else Polygraphy."""
    onnx, plan = version_dir / FP32_FILE, version_dir / PLAN_FILE
    if shutil.which("trtexec"):
        return trtexec_command(onnx, plan, profile)
    if shutil.which("polygraphy"):
        return polygraphy_command(onnx, plan, profile)
    raise TensorRTUnavailableError(
        "building a TensorRT plan needs trtexec or polygraphy (TensorRT, on a GPU machine, "
        "e.g. inside the NGC Triton container); would run:\n  "
        + " ".join(trtexec_command(onnx, plan, profile))
    )


def build_plan(version_dir: Path, profile: ShapeProfile | None = None) -> Path:
    """Build `model.plan` next to the version's ONNX file; returns its path."""
    cmd = plan_command(version_dir, profile or ShapeProfile())
    subprocess.run(cmd, check=True)
    return version_dir / PLAN_FILE
