"""Export a multi-head model to ONNX (fp32 and int8) as a new version in the model repository."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from serving.model_store import (
    CANDIDATES_DIR,
    CHECKPOINT_DIR,
    FP32_FILE,
    HEADS_FILE,
    INT8_FILE,
    TOKENIZER_FILE,
    ModelVersion,
    next_version,
    read_version,
    write_manifest,
)
from serving.multihead import MultiHeadModel
from serving.triton.repository import install_python_model
from serving.triton_outputs import ensure_outputs

log = logging.getLogger(__name__)
OPSET = 17


def output_names(model: MultiHeadModel) -> list[str]:
    """Graph output names: one `<task>_logits` per head, then `embedding`."""
    return [f"{t.name}_logits" for t in model.tasks] + ["embedding"]


def export_onnx(model: MultiHeadModel, path: Path) -> None:
    """Trace `model` to ONNX with dynamic batch and sequence axes."""
    model.eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    names = output_names(model)
    dynamic: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
    }
    dynamic.update({n: {0: "batch"} for n in names})
    # The tracer warns about Python-side shape checks in transformers' masking code; the
    # parity test proves the graph generalises across batch and sequence sizes.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def optimize_onnx(path: Path, model: MultiHeadModel) -> None:
    """Fuse attention and layer norms in place with ONNX Runtime's transformer optimizer."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.encoder.config
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
    )
    optimized.save_model_to_file(str(path))


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization, per channel (per-tensor costs a point of accuracy)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # silences an advice-level "run pre-processing" warning
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def save_heads(model: MultiHeadModel, path: Path) -> None:
    """Store each head's weight and bias, so code without the ONNX graph can apply them."""
    import numpy as np

    arrays = {}
    for task in model.tasks:
        head = model.heads[task.name]
        arrays[f"{task.name}.weight"] = head.weight.detach().numpy()
        arrays[f"{task.name}.bias"] = head.bias.detach().numpy()
    np.savez(path, **arrays)


def export_version(
    model: MultiHeadModel,
    tokenizer: Any,
    *,
    repository: Path,
    name: str,
    max_length: int,
    base_checkpoint: str,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    finalize: Callable[[ModelVersion], dict[str, Any]] | None = None,
    candidate: bool = False,
) -> ModelVersion:
    """Write a new numbered version (fp32 + int8 ONNX, tokenizer, weights, manifest); return it.

    The version is built in a staging directory and renamed into place when complete: a
    Triton server polling the repository must never see a half-written version.
    `finalize` runs on the complete staged version (to evaluate it and write reports beside
    it); what it returns is merged into the manifest. A `candidate` is kept aside, not
    served, until it is promoted.
    """
    version = next_version(repository, name)
    home = repository / name / CANDIDATES_DIR if candidate else repository / name
    final = home / str(version)
    path = home / f".staging-{version}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=False)
    try:
        export_onnx(model, path / FP32_FILE)
        optimize_onnx(path / FP32_FILE, model)
        quantize_int8(path / FP32_FILE, path / INT8_FILE)
        tokenizer.backend_tokenizer.save(str(path / TOKENIZER_FILE))
        save_heads(model, path / HEADS_FILE)
        # PyTorch weights, so a later incremental fine-tune can start from this version.
        model.encoder.save_pretrained(str(path / CHECKPOINT_DIR))
        tokenizer.save_pretrained(str(path / CHECKPOINT_DIR))
        # Triton's python backend serves the version through model.py (CPU path).
        install_python_model(path)
        manifest = {
            "name": name,
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "base_checkpoint": base_checkpoint,
            "max_length": max_length,
            "pooling": "mean, L2-normalised",
            "tasks": [t.to_manifest() for t in model.tasks],
            "outputs": output_names(model),
            "variants": {"fp32": FP32_FILE, "int8": INT8_FILE},
            "opset": OPSET,
            "metrics": metrics or {},
            "training": training or {},
        }
        write_manifest(path, manifest)
        if finalize is not None:
            manifest.update(finalize(ModelVersion(name, version, path, manifest)))
            write_manifest(path, manifest)
        if not candidate:
            # Triton must know a new head's output before it sees the version that has it.
            ensure_outputs(repository / name, output_names(model))
        path.rename(final)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    log.info(
        "exported %s %s %d to %s", name, "candidate" if candidate else "version", version, final
    )
    return read_version(final)
