"""The model's ceiling on an accelerator: the served version's encoder and heads in PyTorch,
fp16 on CUDA, at a fixed sequence length, batch by batch.

Two figures per batch size: texts/s of the model alone (inputs already on the device) and
of tokenization + transfer + model (what a server has to do per request). This is the GPU
ceiling the Triton TensorRT path aims at, measured without TensorRT or a Triton server.
On a machine without CUDA, `--device cpu` runs the same measurement in fp32 (how the
script is tested here); its figures are not the CPU serving path (ONNX Runtime int8,
`make bench`'s (a)).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "tweeteval_sentiment" / "test.jsonl"


def load_texts(n: int) -> list[str]:
    """The first `n` TweetEval test tweets, repeated if the file holds fewer."""
    with DATA.open(encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line, _ in zip(fh, range(n), strict=False)]
    return [texts[i % len(texts)] for i in range(n)]


def load_model(repository: Path, name: str) -> tuple[Any, Any]:
    """(MultiHeadModel, tokenizer) of the served version: its fine-tuned weights if it has
    them, else its base encoder with its heads."""
    from serving.model_store import load_version
    from serving.multihead import MultiHeadModel, load_encoder, load_heads, load_version_model

    version = load_version(repository, name)
    if version.checkpoint_path.is_dir():
        return load_version_model(version)
    encoder, tokenizer = load_encoder(version.manifest["base_checkpoint"])
    model = MultiHeadModel(encoder, version.tasks)
    load_heads(model, version)
    return model, tokenizer


def timed(run: Any, rounds: int, sync: Any) -> float:
    """Seconds per call of `run`, over `rounds` calls after two warm-up calls."""
    for _ in range(2):
        run()
    sync()
    started = time.perf_counter()
    for _ in range(rounds):
        run()
    sync()
    return (time.perf_counter() - started) / rounds


def measure(model: Any, tokenizer: Any, texts: list[str], batch: int, args: Any) -> dict[str, Any]:
    """Texts/s of the model alone and with tokenization, for one batch size."""
    import torch

    device = torch.device(args.device)
    chunk = texts[:batch]

    def tokenize() -> Any:
        enc = tokenizer(
            chunk,
            padding="max_length",
            truncation=True,
            max_length=args.seq,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    ids, mask = tokenize()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        alone = timed(lambda: model(ids, mask), args.rounds, sync)
        full = timed(lambda: model(*tokenize()), args.rounds, sync)
    return {
        "batch": batch,
        "model_texts_per_s": round(batch / alone, 1),
        "tokenize_and_model_texts_per_s": round(batch / full, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=REPO / "triton_models")
    parser.add_argument("--model", default="feedpulse_classifier")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--batches", default="64,128", help="comma-separated batch sizes")
    parser.add_argument("--seq", type=int, default=128, help="tokens per text (padded)")
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per figure")
    args = parser.parse_args()

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to PyTorch")
    model, tokenizer = load_model(args.repository, args.model)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    model = model.to(device=args.device, dtype=dtype).eval()
    sizes = [int(b) for b in args.batches.split(",")]
    texts = load_texts(max(sizes))
    rows = [measure(model, tokenizer, texts, b, args) for b in sizes]
    for row in rows:
        print(row, file=sys.stderr)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        json.dumps(
            {
                "device": name,
                "dtype": str(dtype).removeprefix("torch."),
                "seq": args.seq,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
