"""Windows: a token stream cut into ``max_length + 1`` slices (inputs and targets shifted by one)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gemma_core.data.token_cache import TokenShards
from gemma_core.errors import UserError


# ---------------------------------------------------------------------- windows
class TokenWindows:
    """Fixed-length training windows over a token stream.

    Window ``i`` covers ``tokens[start : start + max_length + 1]``: the first
    ``max_length`` tokens are the inputs, the last ``max_length`` the targets.
    Starts are ``0, stride, 2*stride, ...``; when the last of those windows stops
    short of the end, one more window aligned to the very end is added, so the
    final tokens are trained on too (it overlaps its neighbour by a little).
    """

    def __init__(self, tokens: np.ndarray | TokenShards, max_length: int, stride: int | None = None,
                 name: str = "corpus"):
        if isinstance(tokens, TokenShards):
            tokens = tokens.tokens
        stride = max_length if stride is None else stride
        if max_length < 1:
            raise UserError(f"--max_length {max_length} must be at least 1")
        if not 1 <= stride <= max_length:
            raise UserError(f"--stride {stride} must be between 1 and --max_length ({max_length}); "
                            "a larger stride would skip tokens")
        n = len(tokens)
        if n < max_length + 1:
            fits = (f"use --max_length {n - 1} or less" if n >= 2
                    else "give more text")
            raise UserError(f"the {name} has only {n} tokens but a window of --max_length "
                            f"{max_length} needs {max_length + 1}; {fits}, or add more text")
        self.tokens = tokens
        self.max_length = max_length
        self.stride = stride
        self._last_start = n - (max_length + 1)
        self._n_regular = self._last_start // stride + 1
        self._has_tail = (self._n_regular - 1) * stride != self._last_start

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return self._n_regular + int(self._has_tail)

    def start(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range (0..{len(self) - 1})")
        return i * self.stride if i < self._n_regular else self._last_start

    def starts(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window indices out of range (0..{len(self) - 1})")
        return np.where(indices < self._n_regular, indices * self.stride, self._last_start)

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each ``max_length`` int64 ids."""
        s = self.start(i)
        chunk = torch.from_numpy(np.asarray(self.tokens[s:s + self.max_length + 1], dtype=np.int64))
        return chunk[:-1], chunk[1:]

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each of shape (len(indices), max_length), int64."""
        offsets = self.starts(indices)[:, None] + np.arange(self.max_length + 1)
        chunk = torch.from_numpy(np.asarray(self.tokens[offsets], dtype=np.int64))
        return chunk[:, :-1], chunk[:, 1:]


