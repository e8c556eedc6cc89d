"""Model versions on disk, laid out as a Triton model repository: REPO/NAME/VERSION/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.contract import TaskHead

MANIFEST = "feedpulse.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEADS_FILE = "heads.npz"
CHECKPOINT_DIR = "checkpoint"
REPORTS_DIR = "reports"
MODEL_CARD = "MODEL_CARD.md"
VARIANT_FILES = {"fp32": FP32_FILE, "int8": INT8_FILE}


class ModelNotFoundError(FileNotFoundError):
    """No usable model version in the repository."""


@dataclass(frozen=True)
class ModelVersion:
    """One exported version: its files and its manifest."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]

    @property
    def tasks(self) -> tuple[TaskHead, ...]:
        """The task heads recorded in the manifest, in output order."""
        return tuple(TaskHead(t["name"], tuple(t["labels"])) for t in self.manifest["tasks"])

    @property
    def max_length(self) -> int:
        """The model's window in tokens; longer texts are truncated."""
        return int(self.manifest["max_length"])

    def onnx_path(self, variant: str) -> Path:
        """The ONNX file of `variant` ("fp32" or "int8")."""
        if variant not in VARIANT_FILES:
            raise ValueError(
                f"unknown model variant {variant!r}; expected one of {list(VARIANT_FILES)}"
            )
        path = self.path / VARIANT_FILES[variant]
        if not path.exists():
            raise ModelNotFoundError(f"{path} is missing: re-run `feedpulse train`")
        return path

    @property
    def heads_path(self) -> Path:
        """Head weights as numpy arrays (`<task>.weight`, `<task>.bias`), for peers and learners."""
        return self.path / HEADS_FILE

    @property
    def checkpoint_path(self) -> Path:
        """The PyTorch encoder and tokenizer (Hugging Face layout) that incremental training loads."""
        return self.path / CHECKPOINT_DIR

    @property
    def tokenizer_path(self) -> Path:
        """The fast tokenizer's JSON file."""
        return self.path / TOKENIZER_FILE


def list_versions(repository: Path, name: str) -> list[int]:
    """Version numbers with a manifest, ascending."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / MANIFEST).exists()
    )


def next_version(repository: Path, name: str) -> int:
    """The number the next export should use (Triton versions start at 1)."""
    model_dir = repository / name
    taken = (
        [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(taken, default=0) + 1


def load_version(repository: Path, name: str, version: int | None = None) -> ModelVersion:
    """Load version `version`, or the newest one when None."""
    versions = list_versions(repository, name)
    if not versions:
        raise ModelNotFoundError(
            f"no model versions of {name!r} under {repository.resolve()}: run `feedpulse train` first"
        )
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ModelNotFoundError(f"{name!r} has no version {chosen} (have {versions})")
    path = repository / name / str(chosen)
    manifest = json.loads((path / MANIFEST).read_text())
    return ModelVersion(name=name, version=chosen, path=path, manifest=manifest)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, so a half-written version is never picked up."""
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path / MANIFEST)
