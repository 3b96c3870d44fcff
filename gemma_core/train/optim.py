"""The optimiser and the schedule: AdamW alone, or Muon beside AdamW, and their learning rates.

``--optimizer adamw`` trains every parameter with AdamW. ``--optimizer muon``
trains the 2-D weight matrices inside the decoder layers (attention and MLP
projections) with Muon, which replaces each update by the nearest orthogonal
matrix of its momentum (a few Newton-Schulz iterations), and the rest (the
embedding, which is also the tied head, an untied head, every norm weight) with
AdamW. Each optimiser has its own peak learning rate; both follow one schedule
(``--schedule cosine`` or ``wsd``), and Muon's momentum warms up with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # settings import this module
    from gemma_core.train.settings import TrainSettings

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")

# Muon's momentum rises from this to its target over its warmup: early gradients change
# direction fast, and a long memory of them slows the first steps (modded-nanogpt's choice).
MUON_MOMENTUM_START = 0.85
MUON_MOMENTUM_WARMUP_STEPS = 300


def muon_available() -> bool:
    return hasattr(torch.optim, "Muon")


MUON_NEEDS = ("--optimizer muon needs torch 2.9 or newer (torch.optim.Muon); this is torch "
              f"{torch.__version__}; upgrade torch or use --optimizer adamw")


# ------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Schedule:
    """Where each optimizer step's learning rates and Muon momentum come from."""

    max_steps: int
    warmup_steps: int
    kind: str = "cosine"  # cosine: decay from the end of warmup; wsd: hold, then decay at the end
    decay_fraction: float = 0.2  # wsd: the last this fraction of the steps decays linearly
    min_ratio: float = 0.1  # the learning rate ends at this fraction of its peak

    def factor(self, step: int) -> float:
        """The fraction of each peak learning rate for the optimizer step after ``step`` steps.

        Linear warmup over ``warmup_steps`` steps to 1, then either a cosine decay to
        ``min_ratio`` at ``max_steps`` or (wsd) 1 until the last ``decay_fraction`` of
        the steps and a straight line down to ``min_ratio`` at ``max_steps``.
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.max_steps:
            return self.min_ratio
        if self.kind == "wsd":
            decay_steps = max(1, round(self.decay_fraction * self.max_steps))
            decay_start = max(self.warmup_steps, self.max_steps - decay_steps)
            if step < decay_start:
                return 1.0
            progress = (step - decay_start) / max(1, self.max_steps - decay_start)
            return 1.0 - (1.0 - self.min_ratio) * progress
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))

    def muon_momentum(self, step: int, target: float) -> float:
        """Muon's momentum: from 0.85 up to ``target`` over the first 300 steps (a fifth of a
        shorter run), then held."""
        ramp = min(MUON_MOMENTUM_WARMUP_STEPS, max(1, self.max_steps // 5))
        if target <= MUON_MOMENTUM_START:
            return target
        fraction = min(1.0, step / ramp)
        return MUON_MOMENTUM_START + fraction * (target - MUON_MOMENTUM_START)


# ----------------------------------------------------------------- optimiser
def is_muon_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """A weight matrix inside a decoder layer: Muon's, when the run uses Muon."""
    return param.dim() == 2 and name.startswith("layers.")


class TrainingOptimizer:
    """One optimiser (AdamW) or two (Muon and AdamW) stepped as one.

    ``parts`` are the torch optimisers by name ("adamw", "muon"), whose state
    checkpoints save; every parameter group carries its ``peak_lr``, and
    ``apply_schedule`` sets each group's learning rate (and Muon's momentum) for a step.
    """

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        self.parts = parts

    @property
    def name(self) -> str:
        return "muon" if "muon" in self.parts else "adamw"

    def apply_schedule(self, schedule: Schedule, step: int, muon_momentum: float) -> dict[str, float]:
        """Set every group's learning rate for the step after ``step``; each optimiser's, by name."""
        factor = schedule.factor(step)
        rates: dict[str, float] = {}
        for name, part in self.parts.items():
            for group in part.param_groups:
                group["lr"] = group["peak_lr"] * factor
                rates[name] = group["lr"]
                if name == "muon":
                    group["momentum"] = schedule.muon_momentum(step, muon_momentum)
        return rates

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                    betas: tuple[float, float], device: torch.device, fused: bool = True, *,
                    optimizer: str = "adamw", muon_learning_rate: float = 0.02,
                    muon_momentum: float = 0.95) -> TrainingOptimizer:
    """AdamW (weight decay on matrices, none on norm weights), and Muon for the decoder's
    matrices when ``optimizer`` is ``"muon"``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    if optimizer == "muon" and not muon_available():
        raise RuntimeError(MUON_NEEDS)
    seen: set[int] = set()
    muon, decay, no_decay = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # a tied head appears twice
            continue
        seen.add(id(param))
        if optimizer == "muon" and is_muon_matrix(name, param):
            muon.append(param)
        else:
            (decay if param.dim() >= 2 else no_decay).append(param)
    adamw_groups = [group for group in (
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0}) if group["params"]]
    for group in adamw_groups:
        group["peak_lr"] = learning_rate
    # The fused kernel is one pass over each tensor: faster than foreach on a CPU (BENCHMARKS.md).
    extra = {"fused": True} if fused and device.type in ("cuda", "cpu") else {}
    parts: dict[str, torch.optim.Optimizer] = {
        "adamw": torch.optim.AdamW(adamw_groups, lr=learning_rate, betas=tuple(betas), **extra)}
    if muon:
        parts["muon"] = torch.optim.Muon(
            [{"params": muon, "peak_lr": muon_learning_rate}], lr=muon_learning_rate,
            weight_decay=weight_decay, momentum=muon_momentum)
    return TrainingOptimizer(parts)


def describe_optimizer(settings: TrainSettings, optimizer: TrainingOptimizer) -> str:
    """One line for the run's log: which optimiser trains what, at which peak, on which schedule."""
    counts = {name: sum(p.numel() for group in part.param_groups for p in group["params"])
              for name, part in optimizer.parts.items()}
    schedule = (f"wsd schedule (decay over the last {settings.decay_fraction:.0%} of the steps)"
                if settings.schedule == "wsd" else "cosine schedule")
    adamw = f"AdamW at {settings.learning_rate:g} ({counts['adamw']:,} parameters"
    if "muon" not in counts:
        return f"optimizer: {adamw}), {schedule}"
    return (f"optimizer: Muon at {settings.muon_learning_rate:g} for the decoder's weight matrices "
            f"({counts['muon']:,} parameters, momentum {settings.muon_momentum:g}), {adamw}: embeddings "
            f"and norms), {schedule}")
