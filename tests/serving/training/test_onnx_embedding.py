"""The fast path's embeddings through the exported graph agree with PyTorch's, in order,
and large sets take that path."""

from __future__ import annotations

import pytest
import torch

from serving.training import heads as heads_module
from serving.training.data import LabeledText
from serving.training.heads import embed_texts, fit_heads
from serving.training.onnx_embedding import embed_with_onnx
from tests.conftest import BuiltModel

TEXTS = [
    "Markets slide as the central bank raises rates again",
    "what a game!!! best final in years",
    "ok",
    "The new phone's battery dies by noon and support never answers, I want a refund " * 3,
    "Scientists map the protein behind a rare childhood disease",
]


# int8 moves a two-letter text the most (cosine 0.96 here); fp32 is the same graph.
@pytest.mark.parametrize(("variant", "floor"), [("fp32", 0.9999), ("int8", 0.95)])
def test_onnx_embeddings_match_pytorch_row_for_row(
    built_model: BuiltModel, variant: str, floor: float
) -> None:
    model, tokenizer = built_model.model, built_model.tokenizer
    expected = embed_texts(model, tokenizer, TEXTS, 128)
    seen: list[tuple[str, int, int]] = []
    got = embed_with_onnx(
        model,
        tokenizer,
        TEXTS,
        128,
        variant=variant,  # type: ignore[arg-type]
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert got.shape == expected.shape
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    assert float(cosine.min()) >= floor, cosine
    # Row i is text i: each row is closer to its own PyTorch embedding than to any other.
    nearest = (got @ expected.T).argmax(dim=1)
    assert nearest.tolist() == list(range(len(TEXTS)))
    assert seen[-1] == ("embedding", len(TEXTS), len(TEXTS))


def test_large_sets_are_embedded_through_the_graph(
    built_model: BuiltModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heads_module, "MIN_TEXTS", 4)
    sentiments = ["negative", "positive", "neutral"] * 4
    topics = ["Business", "Sports", "World", "Sci/Tech"] * 3
    rows = [
        LabeledText(text, {"sentiment": s, "topic": t})
        for text, s, t in zip(TEXTS * 2, sentiments, topics, strict=False)
    ]
    model = built_model.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        report = fit_heads(model, built_model.tokenizer, rows[:8], rows[8:], max_length=128)
    finally:
        model.load_state_dict(before)  # the session's model is shared
    assert report["embedding"]["by"] == "onnx int8"
    assert report["sentiment"]["heldout_rows"] == 2
