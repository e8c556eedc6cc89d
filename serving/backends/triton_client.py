"""The Triton backend: tokenize here, infer on any Triton server over gRPC (`grpc.aio`)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from serving.backends.contract import InferenceError, ModelInfo, Prediction, predictions_from_chunks
from serving.model_store import ModelVersion
from serving.tokenization import PaddedChunk, TextTokenizer

if TYPE_CHECKING:
    from tritonclient.grpc.aio import InferenceServerClient

log = logging.getLogger(__name__)

# gRPC statuses worth trying again: the server is away, overloaded or slow.
RETRIABLE_STATUSES = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.ABORTED",
    "StatusCode.CANCELLED",
    # The model is unloaded or being reloaded (a repository change, a restart in progress).
    "StatusCode.NOT_FOUND",
}


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's default gRPC channel options, with reconnects at most a second apart.

    gRPC's default reconnect backoff grows to 120 s: after a Triton restart a worker sat
    idle 14 s with the server back (measured in the fault-injection test).
    """
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class TritonClassifier:
    """Sends each length-sorted chunk of a micro-batch as one concurrent request.

    Triton's dynamic batcher can then merge chunks from this and other workers. The
    tokenizer and task labels come from the local copy of the model version; outputs are
    stamped with the version Triton reports it served.
    """

    def __init__(
        self,
        url: str,
        model: ModelVersion,
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
        chunk_size: int = 16,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
    ) -> None:
        # The aio client binds to the running event loop when it is created, so it is made
        # on first use: the backend itself may be opened in a worker thread (a hot swap).
        self._client_options: dict[str, Any] = {
            "ssl": ssl,
            "root_certificates": root_certificates,
            "private_key": private_key,
            "certificate_chain": certificate_chain,
        }
        self._grpc: InferenceServerClient | None = None
        self._url = url
        self._tasks = model.tasks
        self._tokenizer = TextTokenizer(model.tokenizer_path, model.max_length)
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._chunk_size = chunk_size
        self._info = ModelInfo(
            name=model.name,
            version=str(model.version),
            variant="triton",
            tasks=model.tasks,
            max_length=model.max_length,
        )
        self._outputs = [f"{t.name}_logits" for t in self._tasks] + ["embedding"]

    @property
    def info(self) -> ModelInfo:
        """The model and the version Triton served last."""
        return self._info

    def _client(self) -> InferenceServerClient:
        if self._grpc is None:
            from tritonclient.grpc.aio import InferenceServerClient

            # Paths: the client reads the PEM files itself; key and chain are for mutual TLS.
            self._grpc = InferenceServerClient(
                self._url, channel_args=channel_args(), **self._client_options
            )
        return self._grpc

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify `texts`; raises InferenceError (retriable when Triton is away)."""
        if not texts:
            return []
        tokens = self._tokenizer.encode(texts)
        chunks = list(self._tokenizer.chunks(tokens, self._chunk_size))
        results = await asyncio.gather(*(self._infer(chunk) for chunk in chunks))
        return predictions_from_chunks(
            self._tasks,
            tokens.truncated,
            [(chunk.rows, outputs) for chunk, outputs in zip(chunks, results, strict=True)],
            self._info,
        )

    async def _infer(self, chunk: PaddedChunk) -> dict[str, npt.NDArray[np.float32]]:
        from tritonclient.grpc import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException

        inputs = []
        for name, array in (
            ("input_ids", chunk.input_ids),
            ("attention_mask", chunk.attention_mask),
        ):
            tensor = InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [InferRequestedOutput(name) for name in self._outputs]
        for attempt in range(1, self._attempts + 1):
            try:
                result = await self._client().infer(
                    self._info.name, inputs, outputs=outputs, client_timeout=self._timeout_s
                )
                break
            except InferenceServerException as exc:
                retriable = str(exc.status()) in RETRIABLE_STATUSES
                if not retriable or attempt == self._attempts:
                    raise InferenceError(
                        f"Triton at {self._url}: {exc.message()} ({exc.status()})",
                        retriable=retriable,
                    ) from exc
                # Jittered backoff: many workers must not retry in lockstep.
                await asyncio.sleep(0.05 * 2**attempt * (1 + random.random()))
        served = str(result.get_response().model_version)
        if served and served != self._info.version:
            log.info("Triton now serves %s version %s", self._info.name, served)
            self._info = replace(self._info, version=served)
        return {name: result.as_numpy(name) for name in self._outputs}

    async def is_ready(self) -> bool:
        """Whether Triton answers that the model is ready."""
        try:
            return bool(await self._client().is_model_ready(self._info.name))
        except Exception:
            return False

    async def close(self) -> None:
        """Close the gRPC channel (if one was opened)."""
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None
