"""Batches: shuffled, resumable training batches and the fixed validation subset."""

from __future__ import annotations

import math

import numpy as np
import torch

from gemma_core.data.windows import TokenWindows
from gemma_core.errors import UserError


# ---------------------------------------------------------------------- batches
class TrainBatches:
    """Endless, shuffled, resumable training batches.

    Each epoch visits the windows in the order of ``torch.randperm`` seeded with
    ``seed + epoch``, so a run is reproducible and every epoch differs. An epoch
    is ``ceil(len(windows) / (batch_size * world_size))`` steps; the last step is
    filled up from the start of the same permutation, so no window is left out
    of any epoch and every batch is full.

    With several processes, step ``k`` takes the global batch
    ``order[k*B*W : (k+1)*B*W]`` (B = batch_size, W = world_size) and rank ``r``
    takes its ``r``-th block of ``B``: together the ranks see exactly the batch
    one process with ``batch_size = B*W`` sees at the same step.

    ``state_dict()`` names the next batch; ``load_state_dict`` continues from it.
    """

    def __init__(self, windows: TokenWindows, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise UserError(f"--train_batch_size {batch_size} must be at least 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # steps already taken in this epoch
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.windows) / self.global_batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            permutation = torch.randperm(len(self.windows), generator=generator).numpy()
            # Cyclic fill: the final step borrows windows from the epoch's start.
            self._order = np.resize(permutation, self.steps_per_epoch * self.global_batch_size)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def batch_indices(self, epoch: int, position: int) -> np.ndarray:
        """The window indices this rank trains on at step ``position`` of ``epoch``."""
        order = self._epoch_order(epoch)
        start = position * self.global_batch_size + self.rank * self.batch_size
        return order[start:start + self.batch_size]

    def __iter__(self) -> "TrainBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.batch_indices(self.epoch, self.position)
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return self.windows.batch(indices)

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position),
                "global_batch_size": int(self.global_batch_size)}

    def load_state_dict(self, state: dict, same_data: bool = False) -> None:
        """Continue from ``state``. ``same_data``: the windows are known to be the saved run's
        (its fingerprint matched), so a position past the end of an epoch is damage."""
        try:
            epoch, position = state["epoch"], state["position"]
        except (KeyError, TypeError):
            raise UserError(f"data loader state {state!r} lacks 'epoch' and 'position'; "
                            "the checkpoint is damaged") from None
        if not (isinstance(epoch, int) and isinstance(position, int) and epoch >= 0 and position >= 0):
            raise UserError(f"data loader state {state!r} is not two non-negative integers; "
                            "the checkpoint is damaged")
        # Resumed with another number of ranks (or batch): continue after the windows
        # already taken this epoch, rounding up to a whole batch of the new size.
        saved_batch = state.get("global_batch_size", self.global_batch_size)
        if not isinstance(saved_batch, int) or isinstance(saved_batch, bool) or saved_batch < 1:
            raise UserError(f"data loader state global_batch_size {saved_batch!r} is not a whole number "
                            ">= 1; the checkpoint is damaged")
        if same_data and position >= math.ceil(len(self.windows) / saved_batch):
            raise UserError(f"data loader state position {position:,} is past the end of an epoch "
                            f"({math.ceil(len(self.windows) / saved_batch):,} batches); the checkpoint is damaged")
        if saved_batch != self.global_batch_size:
            position = -(-position * saved_batch // self.global_batch_size)
        # A smaller corpus or a larger batch since the save: carry into later epochs.
        epoch += position // self.steps_per_epoch
        self.epoch, self.position = epoch, position % self.steps_per_epoch


def fixed_validation_batches(windows: TokenWindows | int, batch_size: int,
                             max_batches: int | None = None) -> list[list[int]]:
    """The window indices to evaluate, the same every time.

    All windows when ``max_batches`` is None or they fit in it; otherwise
    ``batch_size * max_batches`` windows spread evenly over the whole split, so
    the estimate covers every part of the text, not just its beginning.
    """
    if batch_size < 1:
        raise UserError(f"--train_batch_size {batch_size} must be at least 1")
    if max_batches is not None and max_batches < 1:
        raise UserError(f"the number of validation batches ({max_batches}) must be at least 1")
    n = windows if isinstance(windows, int) else len(windows)
    if max_batches is None or n <= batch_size * max_batches:
        chosen = list(range(n))
    else:
        k = batch_size * max_batches
        chosen = [i * n // k for i in range(k)]  # distinct because n > k
    return [chosen[i:i + batch_size] for i in range(0, len(chosen), batch_size)]


