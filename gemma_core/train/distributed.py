"""Data-parallel training over several processes, on PyTorch's own engine.

``torchrun --nproc_per_node N -m gemma_core train ...`` starts N copies of the
trainer; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each one's
environment. Each process (a rank) trains on its own block of every global
batch, and gradients are averaged across ranks:

* DDP (the default): every rank holds the whole model and optimizer state;
  gradients are all-reduced during the backward pass of the last micro-step
  (earlier micro-steps skip the sync: gradient accumulation is local).
* FSDP2 (``--fsdp``): ``fully_shard`` splits each decoder layer's parameters,
  gradients and optimizer state across ranks; full tensors exist only
  briefly, layer by layer.

Rank 0 alone writes files (logs, plots, checkpoints). A plain ``gemma-core
train`` is world size 1 and takes the same code path: every method here is
then a no-op that returns its input.

Commands from outside (Ctrl-C, SIGTERM) reach each rank separately, so ranks
agree once per step on what to do next (``agree``): all of them stop, save
or evaluate at the same step, or none does.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from gemma_core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def ranks_from_environment(fsdp: bool = False) -> Ranks:
    """The ranks torchrun describes in the environment (world size 1 without torchrun)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers; launch with "
                        "torchrun") from None
    return Ranks(rank, world_size, local_rank, fsdp)


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); return this rank's device."""
    if not ranks.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=ranks.rank, world_size=ranks.world_size)
    return device


def finish(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- agreement
def main_first(ranks: Ranks, device: torch.device, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 first (building a shared token cache, say), then on the others.

    When rank 0 fails with a ``UserError`` (which it prints), every other rank
    fails too instead of waiting forever.
    """
    if not ranks.active:
        return work()
    if ranks.is_main:
        try:
            result = work()
        except UserError:
            agree(ranks, [True], device)
            raise
        agree(ranks, [False], device)
        return result
    if agree(ranks, [False], device)[0]:
        raise UserError("rank 0 could not prepare the data; its message says why")
    return work()


def agree(ranks: Ranks, flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag becomes true on every rank if it is true on any rank."""
    if not ranks.active:
        return flags
    votes = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]


def mean(ranks: Ranks, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over ranks."""
    if not ranks.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ranks.world_size


# ------------------------------------------------------------------ the model
class LossModule(nn.Module):
    """The training loss as a module's forward: DDP synchronises through forward calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = model.loss

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(input_ids, targets)


def wrap(ranks: Ranks, model: nn.Module, device: torch.device) -> LossModule | nn.Module:
    """The module whose forward computes the training loss on this rank."""
    loss_module = LossModule(model)
    if not ranks.active:
        return loss_module
    if ranks.fsdp:
        from torch.distributed.fsdp import fully_shard
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(loss_module)  # the embedding (tied to the head) and the final norm
        return loss_module
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss_module, device_ids=ids)


def loss_module_of(wrapped: nn.Module) -> LossModule:
    return wrapped.module if hasattr(wrapped, "no_sync") else wrapped


@contextlib.contextmanager
def gradient_sync(ranks: Ranks, wrapped: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on micro-steps before the last of an optimizer step."""
    if not ranks.active or enabled:
        yield
        return
    if ranks.fsdp:
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
        return
    with wrapped.no_sync():
        yield


@contextlib.contextmanager
def whole_model(ranks: Ranks, wrapped: nn.Module):
    """The plain model callable as usual (evaluation, sampling) on every rank.

    Under FSDP2 the embedding, final norm and head belong to the root module,
    whose forward is the training loss; any other call must gather them first.
    The decoder layers gather their own shards in their forward.
    """
    if not (ranks.active and ranks.fsdp):
        yield
        return
    wrapped.unshard()
    try:
        yield
    finally:
        wrapped.reshard()


# -------------------------------------------------------- whole tensors back
def squared_norms_summed(ranks: Ranks, norms_squared: torch.Tensor) -> torch.Tensor:
    """Per-rank partial sums of squares made global (FSDP2 shards hold parts of each gradient)."""
    if ranks.active and ranks.fsdp:
        dist.all_reduce(norms_squared, op=dist.ReduceOp.SUM)
    return norms_squared
