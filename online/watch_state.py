"""The model watch's state on disk: one snapshot file with the consumer positions it covers.

Format (little-endian), written by `write_snapshot`, read by `read_snapshot`:

    magic b"FPWATCH\\n" | u32 format version | u64 header length | u32 header crc32
    | u64 blob length | u32 blob crc32 | header (JSON) | blob (arrays, 16-byte aligned)

The header holds the model name, when it was written, the positions
`[[topic, partition, next offset], ...]` and the state tree: JSON values in which a numpy
array is `{"$nd": i}`, raw bytes (the few river objects, pickled) are `{"$b": i}` and a
column of strings is `{"$s": [bytes i, lengths j]}`, all pointing into the blob. Nothing is unpickled except through `loads_river`, which
allows only the river classes the detectors and the hybrid head are made of.

A snapshot is taken in two steps: on the event loop the caller builds the tree from cheap
copies (immutable records, lists copied, river objects pickled), where anything heavy to
lay out is a `Deferred`; `write_snapshot` (off the loop) calls their `to_state()`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"FPWATCH\n"
_PREFIX = struct.Struct("<8sIQIQI")
_ALIGN = 16
# Corrupt snapshots moved aside and kept for a post-mortem (the newest).
KEEP_CORRUPT = 2

# (module, name) a snapshot's pickles may refer to: what river's ADWIN, SoftmaxRegression
# (with SGD) and rolling Accuracy pickle into (river 0.2x). Anything else is refused.
RIVER_CLASSES = frozenset(
    {
        ("builtins", "float"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("copy", "deepcopy"),
        ("functools", "partial"),
        ("river._river_rust.drift", "AdaptiveWindowing"),
        ("river.drift.adwin", "ADWIN"),
        ("river.linear_model.softmax", "SoftmaxRegression"),
        ("river.metrics.accuracy", "Accuracy"),
        ("river.metrics.confusion", "ConfusionMatrix"),
        ("river.optim.losses", "CrossEntropy"),
        ("river.optim.schedulers", "Constant"),
        ("river.optim.sgd", "SGD"),
        ("river.utils.rolling", "Rolling"),
    }
)


class SnapshotError(ValueError):
    """A snapshot that cannot be used: unreadable, damaged or of another format version."""


class _RiverUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in RIVER_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a watch snapshot")
        return super().find_class(module, name)


def dumps_river(obj: Any) -> bytes:
    """Pickle a river object (or a tuple of them) for a snapshot."""
    return pickle.dumps(obj, protocol=5)


def loads_river(data: bytes) -> Any:
    """Unpickle what `dumps_river` wrote, allowing only `RIVER_CLASSES`."""
    try:
        return _RiverUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise SnapshotError(f"river object: {type(exc).__name__}: {exc}") from exc


class Deferred:
    """A part of the state laid out only when the snapshot is written (off the loop); it
    must hold only copies or immutable objects by then."""

    def to_state(self) -> Any:
        """The part as a state tree."""
        raise NotImplementedError


@dataclass(frozen=True)
class TextColumn:
    """A column of strings (None allowed), stored as UTF-8 bytes and lengths rather than
    in the JSON header: 100,000 texts would make JSON encoding hold the GIL for seconds."""

    values: Sequence[str | None]


def _pack_text(column: TextColumn) -> tuple[bytes, npt.NDArray[np.int64]]:
    encoded = [v.encode("utf-8", "surrogatepass") if v is not None else None for v in column.values]
    lengths = np.array([len(b) if b is not None else -1 for b in encoded], dtype=np.int64)
    return b"".join(b for b in encoded if b), lengths


def _unpack_text(data: bytes, lengths: npt.NDArray[Any]) -> list[str | None]:
    if lengths.ndim != 1 or int(lengths[lengths > 0].sum()) != len(data):
        raise SnapshotError("a text column's lengths do not add up to its bytes")
    out: list[str | None] = []
    at = 0
    try:
        for n in lengths.tolist():
            if n < 0:
                out.append(None)
                continue
            out.append(data[at : at + n].decode("utf-8", "surrogatepass"))
            at += n
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"a text column is not UTF-8: {exc}") from exc
    return out


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back: its state tree and the positions it covers."""

    model: str
    written_at: float
    positions: dict[tuple[str, int], int]
    state: dict[str, Any]


class _Blobs:
    """Arrays and bytes laid out one after another, each at a 16-byte boundary."""

    def __init__(self) -> None:
        self.parts: list[memoryview] = []
        self.index: list[list[Any]] = []
        self.size = 0

    def add(self, data: memoryview, dtype: str, shape: Sequence[int]) -> int:
        pad = -self.size % _ALIGN
        if pad:
            self.parts.append(memoryview(bytes(pad)))
            self.size += pad
        self.index.append([dtype, list(shape), self.size, data.nbytes])
        self.parts.append(data)
        self.size += data.nbytes
        return len(self.index) - 1


def _escape(key: str) -> str:
    # Keys that start with "$" are ours: a data key like that gets one more "$".
    return "$" + key if key.startswith("$") else key


def _unescape(key: str) -> str:
    return key[1:] if key.startswith("$$") else key


def _encode(value: Any, blobs: _Blobs) -> Any:
    if isinstance(value, Deferred):
        return _encode(value.to_state(), blobs)
    if isinstance(value, TextColumn):
        data, lengths = _pack_text(value)
        return {"$s": [_encode(data, blobs)["$b"], _encode(lengths, blobs)["$nd"]]}
    if isinstance(value, dict):
        return {_escape(str(k)): _encode(v, blobs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, blobs) for v in value]
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            raise TypeError("object arrays cannot be snapshotted")
        flat = memoryview(arr.reshape(-1).view(np.uint8).data)
        return {"$nd": blobs.add(flat, arr.dtype.str, arr.shape)}
    if isinstance(value, (bytes, bytearray)):
        return {"$b": blobs.add(memoryview(bytes(value)), "|u1", (len(value),))}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any, blob: bytes, index: list[Any]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and ("$nd" in value or "$b" in value):
            return _blob(value, blob, index)
        if len(value) == 1 and "$s" in value:
            refs = value["$s"]
            if not (isinstance(refs, list) and len(refs) == 2):
                raise SnapshotError("bad text column reference")
            data = _blob({"$b": refs[0]}, blob, index)
            return _unpack_text(data, _blob({"$nd": refs[1]}, blob, index))
        return {_unescape(k): _decode(v, blob, index) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, blob, index) for v in value]
    return value


def _blob(ref: dict[str, Any], blob: bytes, index: list[Any]) -> Any:
    i = ref.get("$nd", ref.get("$b"))
    if not isinstance(i, int) or not 0 <= i < len(index):
        raise SnapshotError(f"blob reference {i!r} out of range")
    dtype, shape, offset, nbytes = index[i]
    if offset < 0 or offset + nbytes > len(blob):
        raise SnapshotError(f"blob {i} lies outside the file")
    if "$b" in ref:
        return blob[offset : offset + nbytes]
    dt = np.dtype(dtype)
    if dt.hasobject or int(np.prod(shape)) * dt.itemsize != nbytes:
        raise SnapshotError(f"blob {i}: {dtype} {shape} does not match {nbytes} bytes")
    if nbytes == 0:
        return np.zeros(shape, dtype=dt)
    arr: npt.NDArray[Any] = np.frombuffer(
        blob, dtype=dt, count=nbytes // dt.itemsize, offset=offset
    )
    return arr.reshape(shape)


def snapshot_path(state_dir: Path, model: str) -> Path:
    """Where the snapshot of `model`'s watch lives (one watch per model)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model) or "model"
    return Path(state_dir) / f"{safe}.snapshot"


def write_snapshot(
    path: Path,
    model: str,
    positions: Iterable[tuple[str, int, int]],
    state: dict[str, Any],
) -> int:
    """Write a snapshot atomically (temp file, fsync, rename, fsync of the directory);
    returns its size in bytes. Safe to call off the event loop: see `Deferred`."""
    blobs = _Blobs()
    tree = _encode(state, blobs)
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "model": model,
            "written_at": time.time(),
            "positions": [[t, p, o] for t, p, o in positions],
            "state": tree,
            "blobs": blobs.index,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass")
    blob_crc = 0
    for part in blobs.parts:
        blob_crc = zlib.crc32(part, blob_crc)
    prefix = _PREFIX.pack(
        MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header), blobs.size, blob_crc
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(prefix)
            f.write(header)
            for part in blobs.parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return _PREFIX.size + len(header) + blobs.size


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_snapshot(path: Path) -> Snapshot:
    """Read and check a snapshot; SnapshotError if it is damaged or of another format."""
    data = path.read_bytes()
    if len(data) < _PREFIX.size:
        raise SnapshotError(f"{len(data)} bytes is too short for a snapshot")
    magic, version, header_len, header_crc, blob_len, blob_crc = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError("not a model watch snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"format version {version}, this watch reads {FORMAT_VERSION}")
    start = _PREFIX.size
    if start + header_len + blob_len != len(data):
        raise SnapshotError(
            f"{len(data)} bytes, the prefix announces {start + header_len + blob_len}"
        )
    header = data[start : start + header_len]
    blob = data[start + header_len :]
    if zlib.crc32(header) != header_crc or zlib.crc32(blob) != blob_crc:
        raise SnapshotError("checksum mismatch")
    try:
        doc = json.loads(header)
        positions = {(str(t), int(p)): int(o) for t, p, o in doc["positions"]}
        state = _decode(doc["state"], blob, doc["blobs"])
        if not isinstance(state, dict):
            raise SnapshotError("the state is not an object")
        return Snapshot(str(doc["model"]), float(doc["written_at"]), positions, state)
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SnapshotError(f"bad header: {type(exc).__name__}: {exc}") from exc


def move_aside(path: Path, why: str = "corrupt") -> Path:
    """Rename a snapshot that cannot be used to `<name>.<why>-<ts>` (the newest
    `KEEP_CORRUPT` of them are kept); returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.{why}-{stamp}-{os.getpid()}")
    os.replace(path, target)
    olds = sorted(path.parent.glob(f"{path.name}.{why}-*"), key=lambda p: p.stat().st_mtime)
    for old in olds[:-KEEP_CORRUPT]:
        old.unlink(missing_ok=True)
    return target


def remove_temporaries(path: Path) -> list[Path]:
    """Remove half-written temp files of `path` a killed writer left; returns them."""
    leftovers = list(path.parent.glob(f"{path.name}.tmp-*")) if path.parent.exists() else []
    for tmp in leftovers:
        tmp.unlink(missing_ok=True)
    return leftovers
