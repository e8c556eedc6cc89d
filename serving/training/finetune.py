"""Multi-task fine-tuning of the encoder and every head, with early stopping and checkpoints.

This module holds a run's settings and its entry point, `fine_tune`, which prepares the
rows, optimizer and schedule and hands them to the loop (`loop.py`). A batch mixes tasks;
each head's loss counts only the rows labeled for its task (`loss.py`). Batches are
length-bucketed and padded to their own longest row (`batching.py`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from serving.multihead import MultiHeadModel
from serving.training.batching import choose_max_length, tokenize
from serving.training.checkpoint import (
    CHECKPOINT_FILE,
    restore_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from serving.training.data import LabeledText, TaskData
from serving.training.device import grad_scaler, placement
from serving.training.loop import EncodedRows, FineTuneResult, LoopSetup, LoopState, run_loop
from serving.training.lora import merge_lora, parameter_counts, wrap_lora
from serving.training.loss import task_targets, task_weights
from serving.training.progress import TrainProgress


@dataclass(frozen=True)
class FineTuneConfig:
    """Every knob of a fine-tuning run (recorded in the model card)."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 8e-5
    # The heads start from zero on an L2-normalised embedding: they need a larger step.
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    grad_clip: float = 1.0
    max_length: int | None = None
    length_quantile: float = 0.98
    class_weights: bool = True
    eval_every: int = 400
    patience: int = 3
    max_steps: int | None = None
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # auto, cpu, cuda or cuda:N (serving.training.device): auto takes a GPU where torch sees one.
    device: str = "auto"
    checkpoint_every: int = 200
    # "lora": the encoder stays frozen and learns through low-rank adapters on its linear
    # layers (at `lora_lr`; `lr` is then unused), merged into its weights when the run ends.
    adapter: Literal["full", "lora"] = "full"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    # Adapters start at zero and are few: they need a larger step than the whole encoder.
    lora_lr: float = 5e-4


def fine_tune(
    model: MultiHeadModel,
    tokenizer: Any,
    train: Sequence[LabeledText],
    val_sets: Sequence[TaskData],
    config: FineTuneConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: TrainProgress | None = None,
) -> FineTuneResult:
    """Fine-tune `model` in place on `train`; on return it holds the best validated weights.

    Validation runs every `eval_every` steps and after each epoch; its score is the mean
    macro recall over `val_sets`. Training stops after `patience` evaluations without a
    better score. With `checkpoint_dir`, state is saved every `checkpoint_every` steps and
    `resume=True` continues an interrupted run of the same data and settings exactly.
    It computes on `config.device` and returns the model on the CPU, where export expects it.
    With `adapter="lora"` the encoder trains through LoRA adapters, merged into it on
    return: `model.encoder` is a plain transformers encoder again.
    """
    if not train:
        raise ValueError("no training rows")
    started = time.perf_counter()
    device, precision = placement(config.device, config.precision)
    max_length = config.max_length or choose_max_length(
        tokenizer, [r.text for r in train], config.length_quantile, seed=config.seed
    )
    rows = _encode(model, tokenizer, train, max_length, config.class_weights, device)
    per_epoch, total = _step_budget(len(train), config)

    torch.manual_seed(config.seed)
    if config.adapter == "lora":
        wrap_lora(model, config)
    model.to(device)
    optimizer = _optimizer(model, config)
    trainable, total_params = parameter_counts(model)
    state = LoopState(
        model,
        optimizer,
        _schedule(optimizer, total, config.warmup),
        FineTuneResult(
            max_length,
            precision,
            0,
            0,
            -1.0,
            False,
            0.0,
            trainable_params=trainable,
            total_params=total_params,
            device=str(device),
        ),
        scaler=grad_scaler(device, precision),
    )
    fingerprint = run_fingerprint(train, config, max_length)
    checkpoint = _checkpoints(state, fingerprint, checkpoint_dir, resume)
    setup = LoopSetup(
        config=config,
        tokenizer=tokenizer,
        rows=rows,
        val_sets=val_sets,
        max_length=max_length,
        precision=precision,
        device=device,
        per_epoch=per_epoch,
        total=total,
        checkpoint=checkpoint,
        progress=progress,
    )
    state.result.stopped_early = run_loop(setup, state)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    merge_lora(model)
    model.cpu().eval()
    state.result.seconds = round(time.perf_counter() - started, 1)
    return state.result


def _checkpoints(
    state: LoopState, fingerprint: str, checkpoint_dir: Path | None, resume: bool
) -> Callable[[], None]:
    """Restore `state` from `checkpoint_dir` when resuming; the callback saving it there."""
    ckpt = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    if resume and ckpt is not None and ckpt.exists():
        restore_checkpoint(ckpt, fingerprint, state)

    def checkpoint() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, fingerprint, state)

    return checkpoint


def _encode(
    model: MultiHeadModel,
    tokenizer: Any,
    train: Sequence[LabeledText],
    max_length: int,
    balanced: bool,
    device: torch.device,
) -> EncodedRows:
    ids = tokenize(tokenizer, [r.text for r in train], max_length)
    targets = task_targets(model.tasks, train)
    weights = task_weights(model.tasks, targets, balanced)
    # On the device once: each step indexes its batch's rows there.
    return EncodedRows(
        ids,
        [len(row) for row in ids],
        {name: y.to(device) for name, y in targets.items()},
        {name: None if w is None else w.to(device) for name, w in weights.items()},
    )


def _step_budget(rows: int, config: FineTuneConfig) -> tuple[int, int]:
    """(steps per epoch, total steps): every epoch, unless `max_steps` ends the run sooner."""
    per_epoch = math.ceil(rows / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return per_epoch, total


def _optimizer(model: MultiHeadModel, config: FineTuneConfig) -> torch.optim.Optimizer:
    """AdamW over what trains: the encoder's weights (or its adapters) and every head."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.encoder.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    lr = config.lora_lr if config.adapter == "lora" else config.lr
    return torch.optim.AdamW(
        [
            {"params": decay, "lr": lr, "weight_decay": config.weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            {"params": list(model.heads.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
        ]
    )


def _schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
