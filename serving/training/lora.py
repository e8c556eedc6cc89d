"""LoRA adapters on the encoder (through peft): trained in place of its weights, then merged
back, so the exported encoder is a plain transformers one and its ONNX graph one graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from serving.multihead import MultiHeadModel

if TYPE_CHECKING:
    # finetune.py, which defines the config, wraps and merges through this module.
    from serving.training.finetune import FineTuneConfig


def lora_targets(encoder: nn.Module) -> list[str]:
    """Every linear layer of the encoder's blocks (attention query, key, value and output,
    both feed-forward layers): the pooler is left out, mean pooling never reads it."""
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith("pooler")
    ]


def wrap_lora(model: MultiHeadModel, config: FineTuneConfig) -> None:
    """Freeze `model.encoder` and give its linear layers trainable LoRA adapters (the heads
    stay fully trainable). The adapters' random init draws on the torch RNG: seed it first."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(model.encoder),
        bias="none",
    )
    model.encoder = get_peft_model(model.encoder, lora)


def merge_lora(model: MultiHeadModel) -> None:
    """Fold the adapters into the encoder's weights and drop peft's wrapping."""
    from peft import PeftModel

    if isinstance(model.encoder, PeftModel):
        model.encoder = model.encoder.merge_and_unload()
        model.encoder.requires_grad_(True)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameters of `model`."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
