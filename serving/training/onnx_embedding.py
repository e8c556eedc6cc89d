"""Embeddings for the fast path through the exported graph: ONNX Runtime, not PyTorch.

The frozen encoder is exported once (the same export, optimization and int8 quantization a
served version gets, ~7 s here), then every text is embedded by ONNX Runtime in
length-sorted chunks: on 2 cores the int8 graph embeds 6-7x more texts per second than
PyTorch fp32 does, and the heads are fitted on the embeddings the served graph produces.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from serving.backends.onnx import create_session
from serving.export import export_onnx, optimize_onnx, quantize_int8
from serving.multihead import MultiHeadModel
from serving.tokenization import TextTokenizer

Progress = Callable[[str, int, int], None]
Variant = Literal["int8", "fp32"]

# Rows per ONNX Runtime call: texts are sorted by length first, so a chunk pads little.
CHUNK = 64
# Below this many texts PyTorch is quicker than exporting the graph first (the export
# costs about as long as PyTorch takes for ~1,000 texts here).
MIN_TEXTS = 2000


def embed_with_onnx(
    model: MultiHeadModel,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    variant: Variant = "int8",
    threads: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Pooled embeddings of `texts`, in order, from `model`'s encoder exported to ONNX."""
    with tempfile.TemporaryDirectory(prefix="feedpulse-embed-") as tmp:
        work = Path(tmp)
        graph = work / "model.onnx"
        if progress:
            progress("exporting the encoder", 0, 1)
        export_onnx(model, graph)
        optimize_onnx(graph, model)
        if variant == "int8":
            quantize_int8(graph, work / "model.int8.onnx")
            graph = work / "model.int8.onnx"
        tokenizer.backend_tokenizer.save(str(work / "tokenizer.json"))
        text_tokenizer = TextTokenizer(work / "tokenizer.json", max_length)
        session = create_session(str(graph), threads)
        if progress:
            progress("exporting the encoder", 1, 1)
        index = [o.name for o in session.get_outputs()].index("embedding")
        tokens = text_tokenizer.encode(texts)
        out = np.empty((len(texts), model.hidden_size), dtype=np.float32)
        done = 0
        for chunk in text_tokenizer.chunks(tokens, CHUNK):
            feeds = {"input_ids": chunk.input_ids, "attention_mask": chunk.attention_mask}
            out[chunk.rows] = session.run(None, feeds)[index]
            done += len(chunk.rows)
            if progress:
                progress("embedding", done, len(texts))
    return torch.from_numpy(out)
