"""The in-process ONNX Runtime backend: the embedded default."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import onnxruntime as ort

from serving.backends.contract import InferenceError, ModelInfo, Prediction, predictions_from_chunks
from serving.model_store import ModelVersion
from serving.tokenization import TextTokenizer, TokenizedTexts


def create_session(path: str, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; `threads` 0 lets ONNX Runtime pick."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """Runs the exported multi-head graph with ONNX Runtime in a worker thread.

    Inference runs off the event loop (ONNX Runtime releases the GIL), so the Kafka
    client keeps fetching and heartbeating while a batch is classified.
    """

    def __init__(
        self, model: ModelVersion, *, variant: str = "int8", threads: int = 0, chunk_size: int = 16
    ) -> None:
        self._model = model
        self._chunk_size = chunk_size
        self._tasks = model.tasks
        self._tokenizer = TextTokenizer(model.tokenizer_path, model.max_length)
        self._session = create_session(str(model.onnx_path(variant)), threads)
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self._info = ModelInfo(
            name=model.name,
            version=str(model.version),
            variant=variant,
            tasks=self._tasks,
            max_length=model.max_length,
        )

    @property
    def info(self) -> ModelInfo:
        """The model version this backend serves."""
        return self._info

    def encode(self, texts: Sequence[str]) -> TokenizedTexts:
        """Tokenize like `classify` does (exposed for benchmarks of the raw model)."""
        return self._tokenizer.encode(texts)

    def run_tokenized(self, tokens: TokenizedTexts) -> list[Prediction]:
        """Run the graph on tokenized texts, chunk by length-sorted chunk (blocking)."""
        results = []
        for chunk in self._tokenizer.chunks(tokens, self._chunk_size):
            outputs = self._session.run(
                None, {"input_ids": chunk.input_ids, "attention_mask": chunk.attention_mask}
            )
            results.append((chunk.rows, dict(zip(self._output_names, outputs, strict=True))))
        return predictions_from_chunks(self._tasks, tokens.truncated, results, self._info)

    def classify_sync(self, texts: Sequence[str]) -> list[Prediction]:
        """Tokenize and classify (blocking)."""
        if not texts:
            return []
        return self.run_tokenized(self._tokenizer.encode(texts))

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch without blocking the event loop."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.classify_sync, list(texts))
        except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:
            raise InferenceError(f"ONNX Runtime failed: {exc}", retriable=False) from exc

    async def close(self) -> None:
        """Stop the inference thread."""
        self._executor.shutdown(wait=True)
