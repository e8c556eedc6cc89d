"""Where a fine-tuning run computes (the CPU or a CUDA GPU) and in which precision.

`auto` picks the GPU when torch sees one. On the CPU, `auto` precision is bf16 autocast where
the CPU has native bf16 (about 1.6x faster there), else fp32. On a GPU it is bf16 where the
GPU has native bf16, else fp16, whose backward pass needs a gradient scaler: fp16 gradients
underflow to zero without one, while bf16 keeps fp32's exponent range.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """The torch device for `device`: auto, cpu, cuda or cuda:N (auto: cuda when visible)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for, but no CUDA device is visible to torch "
                "(torch.cuda.is_available() is False); use auto or cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} was asked for, but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return resolved


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """bf16, fp16 or fp32 for `precision` (auto, bf16, fp16 or fp32) on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if torch.device(device).type == "cuda":
        if precision != "auto":
            return precision
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if precision == "fp16":
        # CPU fp16 autocast runs most ops slower than fp32, and without a scaler it underflows.
        raise ValueError("fp16 is for CUDA devices; on the CPU use auto, bf16 or fp32")
    if precision != "auto":
        return precision
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return "bf16" if check is not None and check() else "fp32"


def placement(device: str, precision: str) -> tuple[torch.device, str]:
    """The (device, precision) a run computes with: the device first, then the precision
    resolved for it."""
    resolved = resolve_device(device)
    return resolved, resolve_precision(precision, resolved)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context for a resolved `precision` on `device` (off for fp32)."""
    dtype = _AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler for the backward pass: on for fp16 only (a no-op pass-through else)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device `model`'s weights are on (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def to_cpu(value: object) -> object:
    """`value` with every tensor inside (dicts, lists, tuples) copied to the CPU: what a
    checkpoint holds, so a run resumes on another device."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value
