"""Warm-up: run a backend on representative shapes before it takes live traffic.

A fresh ONNX Runtime session (or a fresh gRPC channel to Triton) pays its first-call costs
- memory arenas, kernel selection per shape, connection set-up - on the first batches it
sees; a worker that joins its group cold serves seconds of slow batches under load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from serving.backends.contract import Classifier

log = logging.getLogger(__name__)

# Plain words: each is one token for BERT-family tokenizers, so lengths are predictable.
_WORDS = ("markets", "rally", "after", "the", "storm", "news", "today", "team", "wins", "again")


def warmup_texts(max_length: int, batch: int, batches: int) -> list[list[str]]:
    """`batches` batches of `batch` texts, from a few tokens up to the model's window."""
    if batches <= 0 or batch <= 0:
        return []
    out: list[list[str]] = []
    for b in range(batches):
        # Shortest first, the last batch at the window (truncated like long live inputs).
        words = max(4, round(max_length * (b + 1) / batches))
        out.append(
            [" ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(words)) for i in range(batch)]
        )
    return out


async def warm_up(classifier: Classifier, batch: int, batches: int) -> float:
    """Classify the warm-up batches with `classifier`; returns the seconds it took.

    Errors propagate: a backend that cannot classify a warm-up batch is not ready.
    """
    started = time.perf_counter()
    texts: Sequence[list[str]] = warmup_texts(classifier.info.max_length, batch, batches)
    for chunk in texts:
        await classifier.classify(chunk)
    took = time.perf_counter() - started
    if texts:
        log.info(
            "warmed %s version %s on %d batches of %d in %.2fs",
            classifier.info.name,
            classifier.info.version,
            len(texts),
            batch,
            took,
        )
    return took
