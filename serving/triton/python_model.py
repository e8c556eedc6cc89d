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


def merge_padded(arrays: list[Any]) -> Any:
    """Stack (batch, seq) int64 arrays of different seq lengths, right-padding with 0."""
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays])


class TritonPythonModel:
    """One ONNX Runtime session; every request of a dynamic batch goes through one run."""

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
        # pad them to a common width, run once, split the outputs back per request.
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in INPUTS
        }
        sizes = [a.shape[0] for a in feeds["input_ids"]]
        outputs = self.session.run(None, {name: merge_padded(feeds[name]) for name in INPUTS})
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + size]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
