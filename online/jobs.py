"""Fine-tuning jobs and the decisions that end them, as they travel on Kafka topics."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["promoted", "rejected", "skipped", "failed", "rolled_back"]


@dataclass(frozen=True)
class FineTuneJob:
    """Which data to fine-tune on, from which served version, and why.

    `rows` are recent feedback rows per task as (text, label); the trainer adds a replay
    sample of the original training data itself. Rows travel gzip-compressed.
    """

    model: str
    base_version: int
    rows: dict[str, list[tuple[str, str]]]
    reasons: list[dict[str, Any]]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """The job as one JSON record."""
        packed = gzip.compress(json.dumps(self.rows, ensure_ascii=False).encode())
        doc = {
            "id": self.id,
            "model": self.model,
            "base_version": self.base_version,
            "reasons": self.reasons,
            "created_at": self.created_at,
            "row_counts": {task: len(rows) for task, rows in self.rows.items()},
            "rows_gzip_b64": base64.b64encode(packed).decode(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> FineTuneJob:
        """Parse a job record; raises ValueError on anything malformed."""
        try:
            doc = json.loads(value)
            rows = json.loads(gzip.decompress(base64.b64decode(doc["rows_gzip_b64"])))
            return cls(
                model=str(doc["model"]),
                base_version=int(doc["base_version"]),
                rows={
                    str(task): [(str(t), str(lab)) for t, lab in task_rows]
                    for task, task_rows in rows.items()
                },
                reasons=list(doc.get("reasons", [])),
                id=str(doc["id"]),
                created_at=float(doc["created_at"]),
            )
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ValueError(f"not a fine-tuning job: {exc!r}"[:500]) from None


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
    def decode(cls, value: bytes) -> Decision:
        """Parse a decision record; raises ValueError on anything malformed."""
        try:
            doc = json.loads(value)
            return cls(**doc)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a fine-tuning decision: {exc!r}"[:500]) from None
