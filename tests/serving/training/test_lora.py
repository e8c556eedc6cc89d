"""LoRA fine-tuning: only adapters and heads learn, the merge changes no output, the merged
model exports to a plain ONNX graph, and an interrupted run resumes exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from serving.backends.onnx import create_session
from serving.export import export_onnx, output_names
from serving.multihead import MultiHeadModel, load_encoder
from serving.tasks import DEFAULT_TASKS
from serving.training.checkpoint import CHECKPOINT_FILE, run_fingerprint
from serving.training.data import TaskData, load_task_dir
from serving.training.finetune import FineTuneConfig, fine_tune
from serving.training.lora import merge_lora, wrap_lora
from serving.training.model_card import render_model_card
from tests.conftest import SHARED_DATA

SENTIMENT, TOPIC = DEFAULT_TASKS
TEXTS = ["Shares tumble after the retailer cuts its outlook", "what a goal!!! #derby", "ok"]
LORA = FineTuneConfig(
    adapter="lora", batch_size=16, max_length=32, eval_every=3, precision="fp32", seed=0
)


def fresh_model() -> tuple[MultiHeadModel, Any]:
    """MiniLM + untrained heads, seeded so every call starts from the same weights."""
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(None)
    return MultiHeadModel(encoder, DEFAULT_TASKS), tokenizer


@pytest.fixture(scope="module")
def tweets() -> list[TaskData]:
    """64 TweetEval training rows with small validation and test slices."""
    return [load_task_dir(SHARED_DATA / "tweeteval_sentiment", SENTIMENT, limit=64, seed=1)]


def run(model: MultiHeadModel, tokenizer: Any, sets: list[TaskData], **kw: Any) -> Any:
    train = [row for data in sets for row in data.train]
    return fine_tune(model, tokenizer, train, sets, kw.pop("config", LORA), **kw)


def base_key(peft_key: str) -> str:
    """The plain encoder's name of a parameter of the peft-wrapped one."""
    return peft_key.replace("base_model.model.", "").replace(".base_layer", "")


def test_lora_trains_adapters_and_heads_only(tweets: list[TaskData], tmp_path: Path) -> None:
    model, tokenizer = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = dataclasses.replace(LORA, max_steps=4)
    result = run(model, tokenizer, tweets, config=config, checkpoint_dir=tmp_path)
    # The checkpoint holds the wrapped model as it trained: frozen weights beside adapters.
    trained = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["model"]
    adapters = {k: v for k, v in trained.items() if "lora_" in k}
    assert adapters and any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)
    for key, value in trained.items():
        if "lora_" in key or key.startswith("heads."):
            continue
        assert torch.equal(value, before[base_key(key)]), f"{key} moved"
    assert not torch.equal(model.heads["sentiment"].weight, before["heads.sentiment.weight"])
    heads = sum(p.numel() for p in model.heads.parameters())
    assert result.trainable_params == heads + sum(v.numel() for v in adapters.values())
    assert result.trainable_params < result.total_params / 20
    # After the merge only the adapted linear layers differ; embeddings and norms do not.
    assert set(model.state_dict()) == set(before)
    for key, value in model.state_dict().items():
        if "LayerNorm" in key or "embeddings" in key:
            assert torch.equal(value, before[key]), key


@pytest.fixture(scope="module")
def merged() -> tuple[MultiHeadModel, Any, tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """A model with trained-looking (random) adapters merged in, and the outputs the
    peft-wrapped model gave on TEXTS before the merge."""
    model, tokenizer = fresh_model()
    wrap_lora(model, LORA)
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        wrapped = model(inputs["input_ids"], inputs["attention_mask"])
    merge_lora(model)
    return model, tokenizer, wrapped, inputs


def test_merge_leaves_a_plain_encoder_with_the_same_outputs(merged: Any) -> None:
    from transformers import BertModel

    model, _, wrapped, inputs = merged
    assert type(model.encoder) is BertModel
    assert not any("lora" in name for name, _ in model.named_modules())
    assert all(p.requires_grad for p in model.encoder.parameters())
    with torch.no_grad():
        plain = model(inputs["input_ids"], inputs["attention_mask"])
    for before, after in zip(wrapped, plain, strict=True):
        assert torch.allclose(before, after, atol=1e-5)
    # The adapters did change the model: the check above is not vacuous.
    fresh, _ = fresh_model()
    with torch.no_grad():
        untouched = fresh(inputs["input_ids"], inputs["attention_mask"])
    assert not torch.allclose(untouched[-1], plain[-1], atol=1e-3)


def test_merged_model_exports_one_plain_onnx_graph(merged: Any, tmp_path: Path) -> None:
    import onnx

    model, _, wrapped, inputs = merged
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    graph = onnx.load(str(path)).graph
    names = [n.name for n in graph.node] + [i.name for i in graph.initializer]
    assert not [n for n in names if "lora" in n.lower()]
    assert not [f for f in onnx.load(str(path)).functions]
    feeds = {k: v.numpy().astype(np.int64) for k, v in inputs.items()}
    got = create_session(str(path)).run(None, feeds)
    assert [o.name for o in create_session(str(path)).get_outputs()] == output_names(model)
    for want, have in zip(wrapped, got, strict=True):
        assert float(np.abs(want.numpy() - have).max()) < 1e-3


def test_interrupted_lora_run_resumes_to_the_same_weights(
    tweets: list[TaskData], tmp_path: Path
) -> None:
    # Two steps an epoch: the run is interrupted in the third epoch and resumes from the
    # checkpoint written at the second's end.
    config = dataclasses.replace(LORA, epochs=3, eval_every=100)
    sets = [dataclasses.replace(tweets[0], train=tweets[0].train[:32])]
    whole, tokenizer = fresh_model()
    run(whole, tokenizer, sets, config=config)

    class Interrupt(Exception):
        pass

    def stop_at_5(stage: str, done: int, total: int, **figures: float) -> None:
        if done == 5:
            raise Interrupt

    interrupted, _ = fresh_model()
    with pytest.raises(Interrupt):
        run(
            interrupted, tokenizer, sets, config=config, checkpoint_dir=tmp_path, progress=stop_at_5
        )
    resumed, _ = fresh_model()
    result = run(resumed, tokenizer, sets, config=config, checkpoint_dir=tmp_path, resume=True)
    assert result.steps == 6 and len(result.history) == 3
    for name, tensor in whole.state_dict().items():
        assert torch.allclose(tensor, resumed.state_dict()[name], atol=1e-6), name


def test_the_adapter_is_part_of_the_run_fingerprint(tweets: list[TaskData]) -> None:
    rows = tweets[0].train
    full = run_fingerprint(rows, FineTuneConfig(), 32)
    assert full != run_fingerprint(rows, FineTuneConfig(adapter="lora"), 32)
    assert run_fingerprint(rows, FineTuneConfig(adapter="lora", lora_rank=4), 32) != (
        run_fingerprint(rows, FineTuneConfig(adapter="lora"), 32)
    )
    # A full run ignores the adapter knobs: its checkpoints resume as before they existed.
    assert full == run_fingerprint(rows, FineTuneConfig(lora_rank=4), 32)


def test_model_card_shows_the_adapter_and_trainable_share(
    finetune_manifest: Callable[..., dict[str, Any]],
) -> None:
    manifest = finetune_manifest(
        {"adapter": "lora", "lora_rank": 16}, trainable_params=666_247, total_params=23_379_463
    )
    card = render_model_card(manifest, {})
    assert "- Adapter: lora (LoRA adapters (rank 16), merged into the encoder before export)" in (
        card
    )
    assert "trainable parameters 666,247 of 23,379,463 (2.8%)" in card
