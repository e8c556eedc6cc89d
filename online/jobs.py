"""Fine-tuning jobs and the decisions that end them, as they travel on Kafka topics.

Both topics are untrusted input: a record is validated at the edge (pydantic schemas below)
and anything malformed is a `ValueError` with a short reason, never another exception.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from serving.tasks import Gold

Action = Literal["promoted", "rejected", "skipped", "failed", "rolled_back"]

# Rows a job may decompress to: a few-KB gzip bomb must not take the trainer's memory.
MAX_ROWS_BYTES = 64 * 1024 * 1024
MAX_ID_CHARS = 512
# Rows `fitted` compresses without a second thought (about a tenth of a second).
CHEAP_RAW_BYTES = 4 * 1024 * 1024
MAX_REASON_CHARS = 500

_Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
_Name = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]
_NonEmpty = Annotated[str, StringConstraints(min_length=1)]
_Version = Annotated[int, Field(ge=0)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
# Strict: "3" is not a version and true is not a count; extra fields are ignored.
_STRICT = ConfigDict(strict=True, extra="ignore")


class _JobRecord(BaseModel):
    model_config = _STRICT

    id: _Id
    model: _Name
    base_version: _Version
    created_at: _Finite
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    row_counts: dict[str, _Version] | None = None
    rows_dropped_for_size: dict[str, _Version] = Field(default_factory=dict)
    rows_gzip_b64: str


# A row's answer is a label, or a multi-label task's list of labels (possibly empty); jobs
# written before multi-label tasks existed hold labels only.
_ROWS = TypeAdapter(
    dict[_NonEmpty, list[tuple[_NonEmpty, _NonEmpty | list[_NonEmpty]]]],
    config=ConfigDict(strict=True),
)
Rows = dict[str, list[tuple[str, Gold]]]


class _DecisionRecord(BaseModel):
    model_config = _STRICT

    job_id: _Id
    model: _Name
    action: Action
    reason: str
    base_version: _Version
    candidate_version: _Version | None = None
    figures: dict[str, Any] = Field(default_factory=dict)
    decided_at: _Finite = Field(default_factory=time.time)


def _why(exc: ValidationError, prefix: str = "") -> str:
    """The first validation error as `where: what`, without the (possibly huge) input."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(p)[:40] for p in (prefix, *first["loc"]) if str(p))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


def _malformed(kind: str, reason: str) -> ValueError:
    return ValueError(f"not a fine-tuning {kind}: {reason}"[:MAX_REASON_CHARS])


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """One complete gzip stream, decompressed to at most `max_bytes`; ValueError otherwise."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # One bounded call: output stops at max_bytes + 1, whatever the input claims.
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ValueError(f"bad gzip payload: {exc}") from None
    if len(out) > max_bytes:
        raise ValueError(f"rows decompress to more than {max_bytes} bytes")
    if not inflater.eof:
        raise ValueError("truncated gzip payload")
    if inflater.unused_data:
        raise ValueError("bytes after the end of the gzip payload")
    return out


def _decode_rows(packed_b64: str, max_bytes: int) -> Rows:
    try:
        packed = base64.b64decode(packed_b64, validate=True)
    except ValueError as exc:
        raise ValueError(f"rows_gzip_b64 is not base64: {exc}") from None
    try:
        rows = _ROWS.validate_json(gunzip(packed, max_bytes))
    except ValidationError as exc:
        raise ValueError(_why(exc, "rows")) from None
    return {
        task: [(text, gold if isinstance(gold, str) else tuple(gold)) for text, gold in task_rows]
        for task, task_rows in rows.items()
    }


@dataclass(frozen=True)
class FineTuneJob:
    """Which data to fine-tune on, from which served version, and why.

    `rows` are recent feedback rows per task as (text, label), oldest first, the label a
    tuple of labels for a multi-label task (a JSON list on the wire); the trainer
    adds a replay sample of the original training data itself. Rows travel
    gzip-compressed. `rows_dropped_for_size` counts the oldest rows `fitted` left out.
    """

    model: str
    base_version: int
    rows: Rows
    reasons: list[dict[str, Any]]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    rows_dropped_for_size: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The job as one JSON record."""
        # "replace": a lone surrogate in a text would make the record unencodable.
        rows_json = json.dumps(self.rows, ensure_ascii=False).encode("utf-8", "replace")
        # mtime=0: the same job always encodes to the same bytes (and size).
        packed = gzip.compress(rows_json, mtime=0)
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "base_version": self.base_version,
            "reasons": self.reasons,
            "created_at": self.created_at,
            "row_counts": {task: len(rows) for task, rows in self.rows.items()},
            "rows_gzip_b64": base64.b64encode(packed).decode(),
        }
        if self.rows_dropped_for_size:
            doc["rows_dropped_for_size"] = self.rows_dropped_for_size
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None, *, max_rows_bytes: int = MAX_ROWS_BYTES) -> FineTuneJob:
        """Parse a job record; raises ValueError (a short reason) on anything malformed."""
        if not value:
            raise _malformed("job", "record has no value")
        try:
            doc = _JobRecord.model_validate_json(value)
            rows = _decode_rows(doc.rows_gzip_b64, max_rows_bytes)
        except ValidationError as exc:
            raise _malformed("job", _why(exc)) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise _malformed("job", str(exc) or type(exc).__name__) from None
        return cls(
            model=doc.model,
            base_version=doc.base_version,
            rows=rows,
            reasons=doc.reasons,
            id=doc.id,
            created_at=doc.created_at,
            rows_dropped_for_size=doc.rows_dropped_for_size,
        )

    @property
    def row_total(self) -> int:
        """Rows over all tasks."""
        return sum(len(rows) for rows in self.rows.values())

    def keeping(self, kept: int) -> FineTuneJob:
        """A copy with `kept` of the rows (rounded down per task): the same share of every
        task, each task's newest; the rows left out are added to `rows_dropped_for_size`."""
        total = self.row_total
        if kept >= total:
            return self
        rows: Rows = {}
        dropped = dict(self.rows_dropped_for_size)
        for task, task_rows in self.rows.items():
            n = len(task_rows) * kept // total
            rows[task] = task_rows[len(task_rows) - n :]
            if n < len(task_rows):
                dropped[task] = dropped.get(task, 0) + len(task_rows) - n
        return replace(self, rows=rows, rows_dropped_for_size=dropped)

    def fitted(self, max_bytes: int) -> FineTuneJob:
        """This job, or a copy keeping each task's newest rows (the same share of every
        task), whose `encode()` is at most `max_bytes`. ValueError if no rows fit either.

        Every candidate is measured encoded, so the result always fits; it keeps about the
        most rows that do (compression makes the size not quite monotonic in the rows).
        """
        sizes: dict[int, int] = {}

        def size(kept: int) -> int:
            if kept not in sizes:
                sizes[kept] = len(self.keeping(kept).encode())
            return sizes[kept]

        total = self.row_total
        estimate = _RawEstimate(self.rows)
        # Measured first where that is cheap: a trimmed copy also carries the dropped
        # counts, so it can be bigger than the whole job.
        if estimate.raw(total) <= max(4 * max_bytes, CHEAP_RAW_BYTES) and size(total) <= max_bytes:
            return self
        if size(0) > max_bytes:
            raise ValueError(
                f"job {self.id} takes {size(0)} bytes without rows, over the {max_bytes} limit"
            )
        start = _guess(estimate, size, max_bytes)
        return self.keeping(_largest_fitting(size, max_bytes, start, total))


def _guess(estimate: _RawEstimate, size: Callable[[int], int], max_bytes: int) -> int:
    """Rows likely to fit, from the raw text size and one measured compression ratio;
    only where the search starts, so it need not be right."""
    budget = max_bytes - size(0)
    # As if incompressible: raw bytes grow by a third in base64.
    first = estimate.largest_within(budget * 3 // 4)
    raw = estimate.raw(first)
    if first == 0 or raw == 0:
        return first
    ratio = max(size(first) - size(0), 1) / raw
    return estimate.largest_within(int(budget * 0.98 / ratio))


class _RawEstimate:
    """Text and label characters of the newest rows `FineTuneJob.keeping` keeps."""

    def __init__(self, rows: Rows) -> None:
        self.total = sum(len(r) for r in rows.values())
        # Per task: characters of its newest 0, 1, 2, ... rows (8 for quotes and commas).
        self.newest: list[list[int]] = []
        for task_rows in rows.values():
            sums = [0]
            for text, label in reversed(task_rows):
                sums.append(sums[-1] + len(text) + _label_chars(label) + 8)
            self.newest.append(sums)

    def raw(self, kept: int) -> int:
        """Estimated raw size of `kept` rows."""
        if self.total == 0:
            return 0
        return sum(s[(len(s) - 1) * kept // self.total] for s in self.newest)

    def largest_within(self, budget: int) -> int:
        """The most rows whose estimate is within `budget` (the estimate grows with rows)."""
        lo, hi = 0, self.total + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.raw(mid) <= budget else (lo, mid)
        return lo


def _label_chars(gold: Gold) -> int:
    """Characters a row's answer takes in JSON, roughly (quotes and commas of a list)."""
    return len(gold) if isinstance(gold, str) else sum(len(lab) + 4 for lab in gold) + 2


def _largest_fitting(size: Callable[[int], int], limit: int, start: int, total: int) -> int:
    """The largest k in [0, total] with size(k) <= limit (size(0) <= limit), searching out
    from `start` in doubling steps, then halving the gap: O(log) calls, each one measured
    (so the answer fits even where compression makes the size not quite monotonic)."""
    lo, hi = 0, total + 1
    step = max(1, start // 32)
    if size(start) <= limit:
        lo = start
        while hi > total and lo < total:
            k = min(lo + step, total)
            lo, hi = (k, hi) if size(k) <= limit else (lo, k)
            step *= 2
    else:
        hi = start
        while lo == 0 and hi - step > 0:
            k = hi - step
            lo, hi = (k, hi) if size(k) <= limit else (lo, k)
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= limit else (lo, mid)
    return lo


@dataclass(frozen=True)
class Decision:
    """The outcome of one job, with the numbers it was decided on."""

    job_id: str
    model: str
    action: Action
    reason: str
    base_version: int
    candidate_version: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    decided_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """The decision as one JSON record."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Decision:
        """Parse a decision record; raises ValueError (a short reason) on anything malformed."""
        if not value:
            raise _malformed("decision", "record has no value")
        try:
            doc = _DecisionRecord.model_validate_json(value)
        except ValidationError as exc:
            raise _malformed("decision", _why(exc)) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise _malformed("decision", str(exc) or type(exc).__name__) from None
        return cls(**doc.model_dump())
