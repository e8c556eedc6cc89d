"""Fast tokenization to int64 tensors padded to the batch's longest text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedBatch:
    """Model inputs for one batch, plus which texts were cut at the model's window."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    truncated: list[bool]


class TextTokenizer:
    """A Hugging Face fast tokenizer, truncating at `max_length` and padding dynamically."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        pad_id = self._tok.token_to_id("[PAD]")
        self._tok.enable_truncation(max_length=max_length)
        self._tok.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token="[PAD]")
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Tokenize `texts`; sequences are padded to the longest one in this batch."""
        encodings = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return EncodedBatch(ids, mask, [bool(e.overflowing) for e in encodings])
