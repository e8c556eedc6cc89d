"""Model versions on disk, laid out as a Triton model repository: REPO/NAME/VERSION/."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.tasks import TaskHead
from serving.triton_outputs import ensure_outputs

MANIFEST = "feedpulse.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEADS_FILE = "heads.npz"
CHECKPOINT_DIR = "checkpoint"
REPORTS_DIR = "reports"
MODEL_CARD = "MODEL_CARD.md"
# Inside REPO/NAME: trained versions not (yet) served, and versions rolled back. Triton
# ignores non-numeric directories, and its "latest" policy serves the newest numbered one.
CANDIDATES_DIR = "candidates"
RETIRED_DIR = "retired"
VARIANT_FILES = {"fp32": FP32_FILE, "int8": INT8_FILE}
# Manifest key of the trainer's decision on the job that produced a version.
DECISION_KEY = "decision"
STAGING_PREFIX = ".staging-"
# Recorded outcomes of candidates the trainer did not promote: disposable under retention.
NOT_PROMOTED = frozenset({"rejected", "skipped"})


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
        return tuple(TaskHead.from_manifest(t) for t in self.manifest["tasks"])

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


def _numbered(directory: Path) -> list[int]:
    return (
        [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    )


def next_version(repository: Path, name: str) -> int:
    """The number the next export should use (Triton versions start at 1); candidates and
    retired versions keep their numbers, so a number is never reused."""
    model_dir = repository / name
    taken = [
        *_numbered(model_dir),
        *_numbered(model_dir / CANDIDATES_DIR),
        *_numbered(model_dir / RETIRED_DIR),
    ]
    return max(taken, default=0) + 1


def read_version(path: Path) -> ModelVersion:
    """The version stored at `path` (served, candidate or retired); its number is its
    directory's, as Triton sees it."""
    if not (path / MANIFEST).is_file():
        raise ModelNotFoundError(f"{path} holds no model version (no {MANIFEST})")
    manifest = json.loads((path / MANIFEST).read_text())
    return ModelVersion(
        name=str(manifest["name"]), version=int(path.name), path=path, manifest=manifest
    )


def candidate_path(repository: Path, name: str, version: int) -> Path:
    """Where candidate `version` lives until it is promoted."""
    return repository / name / CANDIDATES_DIR / str(version)


def promote_version(repository: Path, name: str, version: int) -> ModelVersion:
    """Serve a candidate (or a retired version): move it into the numbered versions.

    Only a version newer than the one served can become the served one, since the newest
    numbered version is what every backend serves.
    """
    model_dir = repository / name
    source = next(
        (
            d / str(version)
            for d in (model_dir / CANDIDATES_DIR, model_dir / RETIRED_DIR)
            if (d / str(version) / MANIFEST).is_file()
        ),
        None,
    )
    if source is None:
        raise ModelNotFoundError(f"{name!r} has no candidate or retired version {version}")
    served = list_versions(repository, name)
    if served and version < served[-1]:
        raise ValueError(
            f"version {version} is older than the served version {served[-1]}: "
            "roll back the newer versions instead"
        )
    # Triton must know a new head's output before it sees the version that has it.
    ensure_outputs(model_dir, read_version(source).manifest.get("outputs", []))
    source.rename(model_dir / str(version))
    _sync_dir(model_dir)
    return load_version(repository, name, version)


def retire_newest(repository: Path, name: str) -> tuple[ModelVersion, ModelVersion]:
    """Roll back: move the served version aside; return (retired, now served)."""
    served = list_versions(repository, name)
    if len(served) < 2:
        raise ModelNotFoundError(
            f"{name!r} has {len(served)} served version(s): nothing to roll back to"
        )
    retired_dir = repository / name / RETIRED_DIR
    retired_dir.mkdir(exist_ok=True)
    current = repository / name / str(served[-1])
    current.rename(retired_dir / str(served[-1]))
    return read_version(retired_dir / str(served[-1])), load_version(repository, name, served[-2])


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
    return read_version(repository / name / str(chosen))


def version_states(repository: Path, name: str) -> list[tuple[str, ModelVersion]]:
    """Every version with its state: served (the newest numbered), previous, candidate,
    retired; ascending by number."""
    model_dir = repository / name
    served = list_versions(repository, name)
    found: list[tuple[str, ModelVersion]] = []
    for number in served:
        state = "served" if number == served[-1] else "previous"
        found.append((state, load_version(repository, name, number)))
    for state, sub in (("candidate", CANDIDATES_DIR), ("retired", RETIRED_DIR)):
        for number in _numbered(model_dir / sub):
            if (model_dir / sub / str(number) / MANIFEST).is_file():
                found.append((state, read_version(model_dir / sub / str(number))))
    return sorted(found, key=lambda pair: pair[1].version)


def serving_version(repository: Path, name: str) -> int | None:
    """The version backends serve: the newest numbered one (None when there is none)."""
    versions = list_versions(repository, name)
    return versions[-1] if versions else None


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, so a half-written version is never picked up."""
    tmp = path / (MANIFEST + ".tmp")
    with tmp.open("w") as out:
        out.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        out.flush()
        # Synced before the rename: the trainer's decision record must survive a crash.
        os.fsync(out.fileno())
    tmp.replace(path / MANIFEST)
    _sync_dir(path)


def _sync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def record_decision(version: ModelVersion, decision: dict[str, Any]) -> ModelVersion:
    """Add the trainer's decision on the job that produced `version` to its manifest.

    Written atomically into the candidate before it is promoted, so a trainer killed after
    the promotion still finds which job produced which version, with the figures."""
    manifest = {**read_version(version.path).manifest, DECISION_KEY: decision}
    write_manifest(version.path, manifest)
    return read_version(version.path)


def job_version(repository: Path, name: str, job_id: str) -> tuple[str, ModelVersion] | None:
    """The version (and its state, as in `version_states`) a job's recorded decision is
    on, or None when the job produced none (the newest, were there several)."""
    found = [
        (state, version)
        for state, version in version_states(repository, name)
        if isinstance(record := version.manifest.get(DECISION_KEY), dict)
        and record.get("job_id") == job_id
    ]
    return found[-1] if found else None


@dataclass(frozen=True)
class Removed:
    """A directory `clean_repository` removed, its size, and why it could go."""

    path: Path
    size_bytes: int
    kind: str  # "staging" or "rejected"


def clean_repository(repository: Path, name: str, keep_rejected: int) -> list[Removed]:
    """Remove leftover staging directories and all but the newest `keep_rejected`
    candidates the trainer did not promote; return what was removed.

    Served, previous and retired versions are never touched, nor candidates without a
    recorded rejection (awaiting promotion, or made by hand). A staging directory whose
    exporting process is alive (another process than this one) is still being written."""
    model_dir = repository / name
    found: list[tuple[Path, str]] = [
        (path, "staging")
        for home in (model_dir, model_dir / CANDIDATES_DIR)
        if home.is_dir()
        for path in sorted(home.glob(STAGING_PREFIX + "*"))
        if path.is_dir() and not _exporter_alive(path)
    ]
    rejected = [
        version
        for state, version in version_states(repository, name)
        if state == "candidate"
        and isinstance(record := version.manifest.get(DECISION_KEY), dict)
        and record.get("action") in NOT_PROMOTED
    ]
    dropped = rejected[: max(0, len(rejected) - keep_rejected)]
    found += [(version.path, "rejected") for version in dropped]
    removed = []
    for path, kind in found:
        size = _size(path)
        shutil.rmtree(path)
        removed.append(Removed(path, size, kind))
    return removed


def _exporter_alive(staging: Path) -> bool:
    """Whether the process named in `.staging-VERSION-PID` runs, other than this one."""
    pid_text = staging.name.rsplit("-", 1)[-1]
    if not pid_text.isdigit() or int(pid_text) in (0, os.getpid()):
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
