"""Output records: one labeled document per classified input, one dead letter per rejection,
and the dead letter that stands in for an output too large to produce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.backends.contract import ModelInfo, Prediction
from streams.classify.batching import ValidatedBatch
from streams.kafka.records import (
    Headers,
    dead_letter_headers,
    dead_letter_value,
    id_headers,
    labeled_value,
    output_key,
)
from streams.messages import OUTPUT_TOO_LARGE, FeedItem, Origin, Rejection
from streams.settings import Settings

# What is kept of the input when even the dead letter standing in for its output is refused.
OVERSIZE_KEEP_BYTES = 16 * 1024


@dataclass(frozen=True)
class Output:
    """One record to produce, and the input it accounts for."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    item_id: str
    origin: Origin
    # The input's bytes: what a dead letter standing in for this output must carry.
    original: bytes | None = None


@dataclass
class PreparedBatch:
    """A classified batch whose outputs are ready to produce."""

    records: Sequence[Any]
    outputs: list[Output]
    classified: list[tuple[FeedItem, Prediction]]
    rejections: list[tuple[Rejection, str]]


def labeled_outputs(
    settings: Settings,
    batch: ValidatedBatch,
    classified: Sequence[tuple[FeedItem, Prediction]],
    model: ModelInfo,
    stamps: dict[str, float],
    worker_id: str,
) -> list[Output]:
    """The labeled document of every classified item, keyed like its input."""
    outputs: list[Output] = []
    for item, pred in classified:
        labeled = labeled_value(
            item, pred, model, stamps, worker_id, embedding=settings.output_embedding
        )
        o = item.origin
        outputs.append(
            Output(
                settings.output_topic,
                output_key(item.id, o),
                labeled,
                id_headers(item.id),
                item.id,
                o,
                batch.original(o),
            )
        )
    return outputs


def dead_letter_outputs(
    settings: Settings, batch: ValidatedBatch, rejections: Sequence[tuple[Rejection, str]]
) -> list[Output]:
    """A dead letter with the original bytes and the reason for every rejection."""
    outputs: list[Output] = []
    for rej, stage in rejections:
        o = rej.origin
        value, extra = dead_letter_value(batch.original(o), settings.max_message_bytes)
        headers = dead_letter_headers(rej, stage) + extra
        outputs.append(Output(settings.dlq_topic, output_key(rej.id, o), value, headers, rej.id, o))
    return outputs


def oversized_stand_in(settings: Settings, out: Output, error: BaseException) -> Output:
    """A dead letter with the input's original bytes, standing in for an output too
    large to produce; cut to a small prefix if even the dead letter was refused."""
    rejection = Rejection(out.item_id[:1024], OUTPUT_TOO_LARGE, str(error)[:1024], out.origin)
    refused_again = out.topic == settings.dlq_topic
    keep = OVERSIZE_KEEP_BYTES if refused_again else settings.max_message_bytes
    value, extra = dead_letter_value(out.original, keep)
    headers = dead_letter_headers(rejection, "produce") + extra
    return Output(settings.dlq_topic, None, value, headers, out.item_id, out.origin, out.original)
