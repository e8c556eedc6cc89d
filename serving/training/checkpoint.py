"""Checkpoints of a fine-tuning run: the whole loop state and the torch RNG, written
atomically, and restored only into a run of the same data and settings."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from serving.training.data import LabeledText
from serving.training.device import model_device, to_cpu
from serving.training.loop import FineTuneResult, LoopState

if TYPE_CHECKING:
    # finetune.py, which defines the config, saves and restores through this module.
    from serving.training.finetune import FineTuneConfig

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "last.pt"


def run_fingerprint(rows: Sequence[LabeledText], config: FineTuneConfig, max_length: int) -> str:
    """A digest of the training rows, the settings and the window: a checkpoint resumes only
    the run it was written by (validation, saving and patience settings may change)."""
    digest = hashlib.blake2b(digest_size=12)
    for row in rows:
        digest.update(row.text.encode())
        digest.update(json.dumps(row.labels, sort_keys=True).encode())
    # The device too: checkpoints hold CPU tensors, so a run resumes on another device.
    skip = {"checkpoint_every", "eval_every", "patience", "device"}
    if config.adapter == "full":
        # The adapter knobs play no part: a full run keeps the digest it had before them.
        skip |= {"adapter", "lora_rank", "lora_alpha", "lora_dropout", "lora_lr"}
    knobs = {k: v for k, v in asdict(config).items() if k not in skip}
    digest.update(json.dumps({**knobs, "max_length": max_length}, sort_keys=True).encode())
    return digest.hexdigest()


def save_checkpoint(path: Path, fingerprint: str, state: LoopState) -> None:
    """Write `state` and the torch RNG to `path`, tagged with the run's `fingerprint`; every
    tensor on the CPU (the model's, the optimizer's), so it loads on any device."""
    device = model_device(state.model)
    _save(
        path,
        {
            "fingerprint": fingerprint,
            "model": to_cpu(state.model.state_dict()),
            "optimizer": to_cpu(state.optimizer.state_dict()),
            "scheduler": state.scheduler.state_dict(),
            "result": asdict(state.result),
            "best_state": state.best_state,
            "bad_evals": state.bad_evals,
            "scaler": state.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            # Dropout on a GPU draws on its own generator.
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
    )


def restore_checkpoint(path: Path, fingerprint: str, state: LoopState) -> None:
    """Load the checkpoint at `path` into `state` and the torch RNG; refuse one written by a
    run with another `fingerprint`."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["fingerprint"] != fingerprint:
        raise ValueError(
            f"{path} belongs to a run with other data or settings; "
            "remove it or train without --resume"
        )
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    # The device and precision are this run's: the interrupted one may have run elsewhere.
    here = {"device": state.result.device, "precision": state.result.precision}
    state.result = FineTuneResult(**{**saved["result"], **here})
    state.best_state = saved["best_state"]
    state.bad_evals = saved["bad_evals"]
    if saved.get("scaler") and state.scaler.is_enabled():
        state.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    device = model_device(state.model)
    if saved.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    log.info("resumed from %s at step %d", path, state.result.steps)


def _save(path: Path, state: dict[str, Any]) -> None:
    # Through a temporary file: a run killed mid-write leaves the previous checkpoint whole.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
