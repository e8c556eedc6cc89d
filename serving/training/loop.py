"""The fine-tuning loop: optimizer steps over length-bucketed epochs, validation every
`eval_every` steps and at each epoch's end with early stopping, and a checkpoint when due."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from serving.multihead import MultiHeadModel
from serving.training.batching import length_batches, pad
from serving.training.data import TaskData
from serving.training.device import autocast, grad_scaler
from serving.training.evaluation import headline
from serving.training.loss import multitask_loss
from serving.training.prediction import evaluate_sets
from serving.training.progress import TrainProgress

if TYPE_CHECKING:
    # finetune.py, which defines the config, builds the loop: it imports this module.
    from serving.training.finetune import FineTuneConfig

log = logging.getLogger(__name__)


@dataclass
class FineTuneResult:
    """What a run did: the chosen window, the validation curve and where it stopped."""

    max_length: int
    precision: str
    steps: int
    best_step: int
    best_score: float
    stopped_early: bool
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    # What the optimizer updated (LoRA: the adapters and heads), of the model's parameters.
    trainable_params: int = 0
    total_params: int = 0
    # Where it computed: cpu, cuda or cuda:N.
    device: str = "cpu"


@dataclass
class LoopState:
    """What the steps change; a checkpoint holds all of it, so a resumed run continues exactly."""

    model: MultiHeadModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    result: FineTuneResult
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals: int = 0
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: grad_scaler(torch.device("cpu"), "fp32")
    )


@dataclass(frozen=True)
class EncodedRows:
    """The training rows as the loop consumes them: token ids, and per task targets and
    class weights for the loss."""

    ids: list[list[int]]
    lengths: list[int]
    targets: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor | None]


@dataclass(frozen=True)
class LoopSetup:
    """A run's fixed inputs: settings, rows, validation sets, the step budget and where
    progress and checkpoints go."""

    config: FineTuneConfig
    tokenizer: Any
    rows: EncodedRows
    val_sets: Sequence[TaskData]
    max_length: int
    precision: str
    device: torch.device
    per_epoch: int
    total: int
    checkpoint: Callable[[], None]
    progress: TrainProgress | None = None


@dataclass
class _LiveFigures:
    """The smoothed loss and the rows/s window shown to the progress sink (not checkpointed:
    a resumed run starts them afresh)."""

    loss: float | None = None
    rows: int = 0
    since: float = field(default_factory=time.perf_counter)


def run_loop(setup: LoopSetup, state: LoopState) -> bool:
    """Train from `state.result.steps` up to `setup.total` steps; True if it stopped early."""
    state.model.train()
    live = _LiveFigures()
    stop = False
    while state.result.steps < setup.total and not stop:
        epoch = state.result.steps // setup.per_epoch
        # Seeded per epoch, so a resumed run rebuilds the interrupted epoch's batches.
        rng = random.Random(setup.config.seed * 7919 + epoch)
        batches = length_batches(setup.rows.lengths, setup.config.batch_size, rng)
        for batch in batches[state.result.steps - epoch * setup.per_epoch :]:
            loss = _train_step(setup, state, batch)
            smoothed = _report(setup, state.result.steps, live, loss, len(batch))
            stop = _validate_and_checkpoint(setup, state, smoothed)
            if stop or state.result.steps >= setup.total:
                break
    return stop


def _train_step(setup: LoopSetup, state: LoopState, batch: list[int]) -> float:
    """One optimizer and schedule step on `batch`; its loss."""
    rows = setup.rows
    input_ids, mask = pad([rows.ids[i] for i in batch], setup.tokenizer.pad_token_id)
    with autocast(setup.device, setup.precision):
        outputs = state.model(input_ids.to(setup.device), mask.to(setup.device))
    loss = multitask_loss(
        outputs, {k: v[batch] for k, v in rows.targets.items()}, state.model, rows.weights
    )
    state.optimizer.zero_grad(set_to_none=True)
    # The scaler (fp16 only, else a pass-through) keeps small gradients from underflowing;
    # they are unscaled before clipping so the clip sees their true norm.
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    nn.utils.clip_grad_norm_(state.model.parameters(), setup.config.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.result.steps += 1
    return float(loss.detach())


def _report(setup: LoopSetup, steps: int, live: _LiveFigures, loss: float, rows: int) -> float:
    """Fold a step into the live figures and report them; the smoothed loss."""
    smoothed = loss if live.loss is None else 0.98 * live.loss + 0.02 * loss
    live.loss = smoothed
    live.rows += rows
    now = time.perf_counter()
    if setup.progress:
        setup.progress(
            "fine-tuning",
            steps,
            setup.total,
            loss=smoothed,
            rows_per_s=live.rows / max(now - live.since, 1e-9),
        )
    if now - live.since > 30:
        live.rows, live.since = 0, now
    return smoothed


def _validate_and_checkpoint(setup: LoopSetup, state: LoopState, loss: float) -> bool:
    """Validate every `eval_every` steps and at an epoch's end, checkpoint when due or
    stopping; True when training should stop."""
    steps = state.result.steps
    end_of_epoch = steps % setup.per_epoch == 0 or steps == setup.total
    stop = False
    if steps % setup.config.eval_every == 0 or end_of_epoch:
        stop = validate(setup, state, steps / setup.per_epoch, loss)
    if steps % setup.config.checkpoint_every == 0 or end_of_epoch or stop:
        setup.checkpoint()
    return stop


def validate(setup: LoopSetup, state: LoopState, epoch: float, loss: float) -> bool:
    """Record a validation point, keeping the best weights; True when patience ran out.

    The score is the mean headline figure over the validation sets (macro recall, macro-F1
    for multi-label sets), or minus the training loss where none has validation rows.
    """
    result = state.result
    reports = evaluate_sets(
        state.model, setup.tokenizer, setup.val_sets, setup.max_length, precision=setup.precision
    )
    score = round(
        sum(headline(r) for r in reports.values()) / len(reports) if reports else -loss,
        4,
    )
    result.history.append(
        {
            "step": result.steps,
            "epoch": round(epoch, 3),
            "rows_seen": result.steps * setup.config.batch_size,
            "train_loss": round(loss, 4),
            "val_score": score,
            "val": {name: headline(r) for name, r in reports.items()},
        }
    )
    if score > result.best_score:
        result.best_score, result.best_step, state.bad_evals = score, result.steps, 0
        # Kept on the CPU: off the GPU's memory, and a checkpoint resumes on any device.
        state.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()
        }
    else:
        state.bad_evals += 1
    log.info("step %d: val score %.4f (best %.4f)", result.steps, score, result.best_score)
    return state.bad_evals >= setup.config.patience
