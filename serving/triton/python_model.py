"""Triton python-backend model: runs the exported ONNX graph with ONNX Runtime (CPU path).

`feedpulse` export copies this file into every model version as `model.py`. It runs inside
Triton's python stub, not in feedpulse: only numpy, onnxruntime and Triton's utils here.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # in Triton

INPUTS = ("input_ids", "attention_mask")


# How much padding a merged run may add over the requests' own padded cells: Triton's
# dynamic batcher joins requests of any widths, and padding a length-sorted chunk of short
# posts to a long one's width wastes most of the run on padding.
MAX_MERGE_WASTE = 0.15


def merge_padded(arrays: list[Any]) -> Any:
    """Stack (batch, seq) int64 arrays of different seq lengths, right-padding with 0."""
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays])


def padding_groups(
    shapes: list[tuple[int, int]], max_waste: float = MAX_MERGE_WASTE
) -> list[list[int]]:
    """Request indices grouped for one run each: requests sorted by width, merged while
    padding the group to its widest adds at most `max_waste` of its cells."""
    groups: list[list[int]] = []
    rows = cells = 0
    for i in sorted(range(len(shapes)), key=lambda i: shapes[i][1]):
        n, width = shapes[i]
        if groups and rows and (rows + n) * width > (1 + max_waste) * (cells + n * width):
            rows = cells = 0
        if not rows:
            groups.append([])
        groups[-1].append(i)
        rows += n
        cells += n * width
    return groups


class TritonPythonModel:
    """One ONNX Runtime session; the requests of a dynamic batch run in groups of similar
    width."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        manifest = json.loads((version_dir / "feedpulse.json").read_text())
        variant = params.get("variant", "int8")
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            options.intra_op_num_threads = threads
        path = version_dir / manifest["variants"][variant]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        # Requests of one dynamic batch may differ in sequence length (ragged batching):
        # those of similar width run together, padded to a common width; the outputs are
        # split back per request.
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in INPUTS
        }
        responses: list[Any] = [None] * len(requests)
        for group in padding_groups([a.shape for a in feeds["input_ids"]]):
            merged = {name: merge_padded([feeds[name][i] for i in group]) for name in INPUTS}
            outputs = self.session.run(None, merged)
            start = 0
            for i in group:
                size = feeds["input_ids"][i].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + size]))
                    for name, out in zip(self.output_names, outputs, strict=True)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses

    def finalize(self) -> None:
        self.session = None
