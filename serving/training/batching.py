"""Token windows and batches for training: tokenizing, length-bucketed shuffled batches and
padding each batch to its own longest row, so short tweets cost little."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch


def choose_max_length(
    tokenizer: Any, texts: Sequence[str], quantile: float = 0.98, cap: int = 256, seed: int = 0
) -> int:
    """The token window that holds `quantile` of the texts whole, rounded up to 16."""
    chosen = random.Random(seed).sample(list(texts), min(len(texts), 5000))
    lengths = sorted(len(ids) for ids in tokenizer(chosen, truncation=False)["input_ids"])
    at = lengths[min(len(lengths) - 1, int(quantile * len(lengths)))]
    limit = min(cap, int(getattr(tokenizer, "model_max_length", cap) or cap))
    return max(16, min(limit, 16 * math.ceil(at / 16)))


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length rows: sort within pools of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) padded to the longest row."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Unpadded token ids, cut at `max_length`."""
    return list(tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"])
