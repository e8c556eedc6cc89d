"""The exported ONNX graphs agree with the PyTorch model they came from."""

from __future__ import annotations

import numpy as np
import torch

from serving.backends.onnx import create_session
from serving.training.data import read_labeled, seed_data_path, split_holdout
from tests.conftest import BuiltModel

TEXTS = [
    "Shares tumble after the retailer cuts its outlook",
    "What a goal!!! best match I've seen all season #derby",
    "Parliament approves the budget after a late-night vote",
    "short",
    "A new open-source compiler release doubles build speed on ARM laptops, "
    "according to benchmarks published by the maintainers this morning",
]


def torch_outputs(
    built: BuiltModel, texts: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    enc = built.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    with torch.no_grad():
        outs = built.model(
            torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
        )
    names = [f"{t.name}_logits" for t in built.model.tasks] + ["embedding"]
    feeds = {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }
    return {n: o.numpy() for n, o in zip(names, outs, strict=True)}, feeds


def onnx_outputs(path: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = create_session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def test_fp32_onnx_matches_pytorch(built_model: BuiltModel) -> None:
    expected, feeds = torch_outputs(built_model, TEXTS)
    got = onnx_outputs(str(built_model.version.onnx_path("fp32")), feeds)
    assert set(got) == set(expected)
    for name, want in expected.items():
        diff = float(np.abs(got[name] - want).max())
        assert diff < 1e-3, f"{name}: max abs diff {diff}"


def test_int8_onnx_stays_close_and_agrees_on_labels(built_model: BuiltModel) -> None:
    rows = read_labeled(seed_data_path(), built_model.model.tasks)
    _, held = split_holdout(rows)
    expected, feeds = torch_outputs(built_model, [r.text for r in held])
    got = onnx_outputs(str(built_model.version.onnx_path("int8")), feeds)
    cosine = (got["embedding"] * expected["embedding"]).sum(1)  # both L2-normalised
    assert cosine.min() > 0.97, f"int8 embedding cosine similarity down to {cosine.min():.3f}"
    for task in built_model.model.tasks:
        name = f"{task.name}_logits"
        agree = (got[name].argmax(1) == expected[name].argmax(1)).mean()
        assert agree >= 0.9, f"{task.name}: int8 agrees with fp32 on {agree:.0%} of labels"


def test_graph_handles_any_batch_and_sequence_length(built_model: BuiltModel) -> None:
    session = create_session(str(built_model.version.onnx_path("fp32")))
    for batch, seq in [(1, 3), (7, 50), (3, 128)]:
        ids = np.full((batch, seq), 1000, dtype=np.int64)
        outs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert all(o.shape[0] == batch for o in outs)
