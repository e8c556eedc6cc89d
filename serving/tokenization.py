"""Fast tokenization, and padding of length-sorted chunks to their own longest text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids per text (unpadded), plus which texts were cut at the model's window."""

    ids: list[list[int]]
    truncated: list[bool]


@dataclass(frozen=True)
class PaddedChunk:
    """Model inputs for some of a batch's texts; `rows` says which ones, in order."""

    rows: list[int]
    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]


class TextTokenizer:
    """A Hugging Face fast tokenizer, truncating at `max_length`."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        pad_id = self._tok.token_to_id("[PAD]")
        self.pad_id = pad_id if pad_id is not None else 0
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> TokenizedTexts:
        """Tokenize `texts` (no padding yet)."""
        encodings = self._tok.encode_batch(list(texts))
        return TokenizedTexts([e.ids for e in encodings], [bool(e.overflowing) for e in encodings])

    def chunks(self, tokens: TokenizedTexts, chunk_size: int) -> Iterator[PaddedChunk]:
        """Length-sorted chunks of at most `chunk_size` texts, each padded to its longest.

        Padding a whole batch to its longest text wastes most of the work on short posts;
        sorting first keeps every chunk's texts of similar length.
        """
        order = sorted(range(len(tokens.ids)), key=lambda i: len(tokens.ids[i]))
        for start in range(0, len(order), max(1, chunk_size)):
            rows = order[start : start + chunk_size]
            width = max(len(tokens.ids[i]) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(tokens.ids[i])
                ids[r, :n] = tokens.ids[i]
                mask[r, :n] = 1
            yield PaddedChunk(rows, ids, mask)
