"""Keep a Triton model's `config.pbtxt` outputs in step with the versions it serves: one
`<task>_logits` output per head, then `embedding`.

Outputs are only ever added: a config listing an output that the served version lacks is
harmless (clients ask for their version's outputs), while a version whose output the config
lacks is refused by Triton. So a version that adds a head is preceded by its config line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

CONFIG_FILE = "config.pbtxt"


def output_line(name: str) -> str:
    """One graph output as a config entry (every head and the embedding are FP32 rows)."""
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ -1 ] }}'


def _output_block(text: str) -> tuple[int, int]:
    """(start, end) of the `output [ ... ]` list's contents in a config's text."""
    found = re.search(r"^\s*output\s*:?\s*\[", text, flags=re.MULTILINE)
    if found is None:
        raise ValueError("config.pbtxt has no 'output [' block")
    start = found.end()
    depth = 1
    for i in range(start, len(text)):
        depth += {"[": 1, "]": -1}.get(text[i], 0)
        if depth == 0:
            return start, i
    raise ValueError("config.pbtxt's output block is not closed")


def declared_outputs(config: str) -> list[str]:
    """The output names a config declares."""
    start, end = _output_block(config)
    block = config[start:end]
    names = []
    for part in block.split("name:")[1:]:
        names.append(part.split('"')[1])
    return names


def with_outputs(config: str, outputs: Sequence[str]) -> str:
    """`config` with an entry for every name of `outputs` it lacks."""
    missing = [name for name in outputs if name not in declared_outputs(config)]
    if not missing:
        return config
    start, end = _output_block(config)
    body = config[start:end].rstrip()
    lines = [f"{body},"] if body.strip() else [""]
    lines += [f"{output_line(name)}," for name in missing]
    lines[-1] = lines[-1].rstrip(",")
    return config[:start] + "\n".join(lines) + "\n" + config[end:]


def ensure_outputs(model_dir: Path, outputs: Sequence[str]) -> list[str]:
    """Add the missing `outputs` to `model_dir/config.pbtxt` (atomically); the names added.

    No config (in-process serving only) is nothing to do.
    """
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return []
    config = path.read_text()
    updated = with_outputs(config, outputs)
    if updated == config:
        return []
    staged = path.with_name(f".{CONFIG_FILE}.{os.getpid()}")
    staged.write_text(updated)
    staged.replace(path)
    return [name for name in outputs if name not in declared_outputs(config)]
