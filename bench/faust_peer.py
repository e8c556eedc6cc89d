"""The peers a team would write with the design's own stream library, for bench/throughput.py.

A faust-streaming agent takes micro-batches from the input topic (`stream.take(32,
within=...)`), classifies each batch in one call and sends one output per item:

- `transformers`: the encoder through transformers (AutoTokenizer + AutoModel, padded
  batches, `torch.inference_mode`), mean pooling, the same linear heads in NumPy;
- `onnx`: the same exported graph feedpulse serves, through ONNX Runtime, with the model's
  own tokenizer padding each batch to its longest text.

Same encoder and heads as feedpulse; what differs is what feedpulse adds around them.
Each output carries `timestamps.consumed` (when its batch was taken), so the benchmark
times a drain exactly as it does feedpulse's. Run as a process:

    python bench/faust_peer.py {transformers,onnx} MODEL_DIR BOOTSTRAP INPUT OUTPUT GROUP
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.backends.contract import softmax  # noqa: E402
from serving.model_store import ModelVersion, read_version  # noqa: E402

BATCH = 32
WITHIN_S = 0.05  # feedpulse's max_wait_ms default

Classify = Callable[[Sequence[str]], list[dict[str, str]]]


def labels_from_logits(
    model: ModelVersion, logits: dict[str, npt.NDArray[np.float32]]
) -> list[dict[str, str]]:
    """The top label of every task head, per row."""
    rows = len(next(iter(logits.values())))
    out: list[dict[str, str]] = [{} for _ in range(rows)]
    for task in model.tasks:
        best = softmax(logits[task.name].astype(np.float32)).argmax(axis=1)
        for row, index in enumerate(best):
            out[row][task.name] = task.labels[int(index)]
    return out


def transformers_classifier(model: ModelVersion) -> Classify:
    """Batched transformers encoder + mean pooling + the exported linear heads."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    # A fine-tuned version's encoder is its own; a heads-only version's is the base one.
    own = model.checkpoint_path
    checkpoint = str(own) if own.is_dir() else model.manifest["base_checkpoint"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights only: no network here
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    encoder = AutoModel.from_pretrained(checkpoint).eval()
    heads = np.load(model.heads_path)

    def classify(texts: Sequence[str]) -> list[dict[str, str]]:
        batch = tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=model.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        logits = {
            t.name: pooled @ heads[f"{t.name}.weight"].T + heads[f"{t.name}.bias"]
            for t in model.tasks
        }
        return labels_from_logits(model, logits)

    return classify


def onnx_classifier(model: ModelVersion, variant: str = "int8") -> Classify:
    """The served ONNX graph through ONNX Runtime, each batch padded to its longest text."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model.tokenizer_path))
    tokenizer.enable_truncation(max_length=model.max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    session = ort.InferenceSession(
        str(model.onnx_path(variant)), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]

    def classify(texts: Sequence[str]) -> list[dict[str, str]]:
        encodings = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        results = session.run(None, {"input_ids": ids, "attention_mask": mask})
        outputs = dict(zip(names, results, strict=True))
        return labels_from_logits(model, {t.name: outputs[f"{t.name}_logits"] for t in model.tasks})

    return classify


def build_app(args: argparse.Namespace, classify: Classify) -> Any:
    """The faust app: one agent, batches in, one output per item."""
    import faust

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    source = app.topic(args.input, key_serializer="raw", value_serializer="raw")
    sink = app.topic(args.output, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def label(stream: Any) -> None:
        async for values in stream.take(BATCH, within=WITHIN_S):
            consumed = time.time()
            docs = [json.loads(v) for v in values]
            for doc, labels in zip(docs, classify([d["text"] for d in docs]), strict=True):
                out = {"id": doc["id"], "labels": labels, "timestamps": {"consumed": consumed}}
                await sink.send(key=doc["id"].encode(), value=json.dumps(out).encode())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=["transformers", "onnx"])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("bootstrap")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("group")
    args = parser.parse_args()
    model = read_version(args.model_dir)
    make = transformers_classifier if args.backend == "transformers" else onnx_classifier
    app = build_app(args, make(model))
    import faust

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
