"""Tokenised captions, remembered: open_clip's BPE tokenizer is pure Python and, on CPU, costs as much as a
small text tower's forward pass. Toy-world captions repeat (about 27,000 combinations, each seen many times), so
the toy CLIP and the prior tokenise each caption once; web captions rarely repeat and simply pass through once
the cache is full."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


class CachedTokenizer:
    """Wraps an open_clip tokenizer (``texts -> (b, n) long``): each distinct text is tokenised once and kept,
    least recently used first out, up to ``capacity`` texts. Attributes of the wrapped tokenizer (``encode``,
    ``context_length``, ...) pass through."""

    def __init__(self, tokenizer: Callable[[list[str]], Tensor], capacity: int = 65536) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.tokenizer = tokenizer
        self.capacity = capacity
        self._rows: OrderedDict[str, Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return self.tokenizer([])
        missing = [text for text in dict.fromkeys(texts) if text not in self._rows]
        fresh = dict(zip(missing, self.tokenizer(missing))) if missing else {}
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._rows[text]
                self._rows.move_to_end(text)
            rows.append(row)
        for text, row in fresh.items():
            self._remember(text, row)
        return torch.stack(rows)

    def _remember(self, text: str, row: Tensor) -> None:
        if self.capacity == 0:
            return
        self._rows[text] = row.clone()  # a row of a batch tensor would keep the whole batch alive
        if len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)

    def __getattr__(self, name: str) -> Any:
        tokenizer = self.__dict__.get("tokenizer")
        if tokenizer is None:
            raise AttributeError(name)
        return getattr(tokenizer, name)
