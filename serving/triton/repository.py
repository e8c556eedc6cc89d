"""The python-backend model each version in a Triton model repository runs."""

from __future__ import annotations

import json
import py_compile
import shutil
from pathlib import Path

from serving.triton_outputs import ensure_outputs


def install_python_model(version_dir: Path) -> bool:
    """Give a version this release's python-backend `model.py`, byte-compiled; True if it
    was missing or differed (a version exported by an older release keeps its graph and
    gets the current serving code).

    The bytecode is written here because the stub would otherwise write `__pycache__` into
    the version directory on first load, and Triton, polling the repository, would take
    that for a changed version and load the model a second time.
    """
    source = Path(__file__).with_name("python_model.py")
    target = version_dir / "model.py"
    added = not target.exists() or target.read_bytes() != source.read_bytes()
    if added:
        shutil.copyfile(source, target)
    py_compile.compile(str(target), doraise=True)
    return added


def install_python_models(repository: Path) -> int:
    """Install `model.py` in every exported version of every model; returns how many lacked
    it or had another release's.

    Versions exported by feedpulse carry it already; this covers copies made by hand and
    versions exported before an upgrade.
    """
    return sum(
        install_python_model(manifest.parent)
        for manifest in repository.glob("*/[0-9]*/feedpulse.json")
    )


def sync_outputs(repository: Path) -> dict[str, list[str]]:
    """Give every model's config an output for each head its served versions have; returns
    the outputs added per model (a config copied in by hand may predate a new head)."""
    added: dict[str, list[str]] = {}
    for manifest in sorted(repository.glob("*/[0-9]*/feedpulse.json")):
        outputs = json.loads(manifest.read_text()).get("outputs", [])
        names = ensure_outputs(manifest.parent.parent, outputs)
        if names:
            added.setdefault(manifest.parent.parent.name, []).extend(names)
    return added
