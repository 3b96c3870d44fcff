"""Key/value caches for incremental decoding.

Full-attention layers keep every key. Sliding-window layers never look further
back than ``window - 1`` keys, so they keep a ring buffer of ``window`` slots:
after a new key is written, the ring holds exactly the keys the newest query may
see, in whatever order, and attention does not care about key order.
"""

from __future__ import annotations

import torch


class FullLayerCache:
    """Every key and value so far, in a buffer that doubles when full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0

    def _grow_to(self, needed: int, like: torch.Tensor) -> None:
        if self.keys is not None and needed <= self.keys.shape[2]:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        batch, n_kv, _, head_dim = like.shape
        keys = like.new_empty(batch, n_kv, capacity, head_dim)
        values = like.new_empty(batch, n_kv, capacity, head_dim)
        if self.keys is not None:
            keys[:, :, :self.length] = self.keys[:, :, :self.length]
            values[:, :, :self.length] = self.values[:, :, :self.length]
        self.keys, self.values, self.capacity = keys, values, capacity

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Append new keys; return (keys, values, q_offset) to attend over."""
        start, end = self.length, self.length + k.shape[2]
        self._grow_to(end, k)
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end], start


class SlidingLayerCache:
    """The last ``window`` keys in a ring buffer indexed by position modulo window."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0  # tokens seen so far (positions 0 .. length-1)

    def _ordered_past(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``window - 1`` cached keys in position order (what a new query may see)."""
        n_past = min(self.length, self.window - 1)
        positions = torch.arange(self.length - n_past, self.length, device=self.keys.device)
        slots = positions % self.window
        return self.keys[:, :, slots], self.values[:, :, slots]

    def _write(self, k: torch.Tensor, v: torch.Tensor, start: int) -> None:
        if self.keys is None:
            batch, n_kv, _, head_dim = k.shape
            self.keys = k.new_zeros(batch, n_kv, self.window, head_dim)
            self.values = v.new_zeros(batch, n_kv, self.window, head_dim)
        if k.shape[2] == 1:  # decode: one slot, written without building index tensors
            slot = start % self.window
            self.keys[:, :, slot:slot + 1] = k
            self.values[:, :, slot:slot + 1] = v
            return
        keep = min(k.shape[2], self.window)  # older new keys would be overwritten anyway
        positions = torch.arange(start + k.shape[2] - keep, start + k.shape[2], device=k.device)
        slots = positions % self.window
        self.keys[:, :, slots] = k[:, :, -keep:]
        self.values[:, :, slots] = v[:, :, -keep:]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        start, n_new = self.length, k.shape[2]
        if n_new == 1:
            # Decode: write first; the ring then holds exactly the visible keys.
            self._write(k, v, start)
            self.length += 1
            n_visible = min(self.length, self.window)
            if n_visible < self.window:
                return self.keys[:, :, :n_visible], self.values[:, :, :n_visible], n_visible - 1
            return self.keys, self.values, self.window - 1
        # Prefill (or a chunk): attend over the ordered past plus the new keys.
        if self.length:
            past_k, past_v = self._ordered_past()
            keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        else:
            keys, values = k, v
        q_offset = keys.shape[2] - n_new
        self._write(k, v, start)
        self.length += n_new
        return keys, values, q_offset


class KVCache:
    """One cache per layer plus the position of the next token."""

    def __init__(self, layer_windows: list[int | None], capacity: int = 256) -> None:
        self.layers = [FullLayerCache(capacity) if window is None else SlidingLayerCache(window)
                       for window in layer_windows]
        self.position = 0

    def __len__(self) -> int:
        return self.position


class StaticLayerCache:
    """One layer's keys and values in a buffer of fixed size, indexed by position.

    The write position is a tensor shared by every layer (the owning
    ``StaticKVCache.position``), so a decoding step is the same computation at
    every position: a compiled step never recompiles as the text grows. Slots not
    yet written hold zeros and are hidden by the visibility mask.
    """

    def __init__(self, owner: "StaticKVCache", keys: torch.Tensor, values: torch.Tensor) -> None:
        self.owner = owner
        self.keys, self.values = keys, values

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write new keys at their positions; return (keys, values, q_offset as a tensor)."""
        start = self.owner.position
        positions = start + torch.arange(k.shape[2], device=k.device)
        self.keys.index_copy_(2, positions, k)
        self.values.index_copy_(2, positions, v)
        return self.keys, self.values, start


class StaticKVCache:
    """Fixed-size caches for every layer, sliding ones included, and the next position as a tensor.

    Sliding layers keep every position too (the window is applied by the mask),
    which costs memory proportional to ``capacity`` but keeps all shapes fixed.
    """

    def __init__(self, n_layers: int, capacity: int, batch: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, n_kv_heads, capacity, head_dim)
        self.layers = [StaticLayerCache(self, torch.zeros(shape, dtype=dtype, device=device),
                                        torch.zeros(shape, dtype=dtype, device=device))
                       for _ in range(n_layers)]
        self.position = torch.zeros((), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return int(self.position)

    def reset(self) -> None:
        """Start a new text; stale keys beyond the position stay hidden by the mask."""
        self.position.zero_()
