"""One optimizer step: forward and backward over the micro-batches, gradient norms, the update.

``forward_backward`` is the one place a training loss is computed and
differentiated: the step runs it for each micro-batch, and compiling runs it
once on a batch of the training shape to warm the compiler up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from gemma_core.chat import LiveWeights
from gemma_core.data.batches import TrainBatches
from gemma_core.device import autocast
from gemma_core.model.model import Gemma3Model
from gemma_core.model.weights import full_tensor, local_tensor
from gemma_core.train import distributed
from gemma_core.train.compiled_loss import CompiledLoss
from gemma_core.train.optim import TrainingOptimizer
from gemma_core.train.settings import TrainSettings


@dataclass(frozen=True)
class StepResult:
    loss: float | None  # mean training loss; None when loss or gradient was not finite (no update)
    grad_norm: float
    layer_grad_norms: tuple[float, ...]
    learning_rates: dict[str, float]  # each optimiser's, by name ("adamw", "muon")


class TrainStep:
    def __init__(self, settings: TrainSettings, model: Gemma3Model, train_module: torch.nn.Module,
                 optimizer: TrainingOptimizer, batches: TrainBatches, device: torch.device,
                 dtype: torch.dtype, ranks: distributed.Ranks, weights: LiveWeights,
                 log: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.model = model
        self.train_module = train_module
        self.optimizer = optimizer
        self.batches = batches
        self.device = device
        self.dtype = dtype
        self.ranks = ranks
        self.weights = weights
        self.log = log
        self.compile_pending = settings.compile

    def forward_backward(self, inputs: torch.Tensor, targets: torch.Tensor, *, micro_steps: int,
                         sync: bool) -> torch.Tensor:
        """The loss of one micro-batch, its gradient (divided by ``micro_steps``) accumulated.

        Ranks average their gradients once per optimizer step: ``sync`` on the last micro-step.
        """
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with distributed.gradient_sync(self.ranks, self.train_module, sync):
            with autocast(self.device, self.dtype):
                loss = self.train_module(inputs, targets)
            (loss / micro_steps).backward()
        return loss.detach()

    def compile(self) -> None:
        """torch.compile the loss, falling back to eager mode where compiling fails.

        The first step pays the compile time (about 40 s for the demo model on two
        CPU cores; less when the compiler's on-disk cache is warm).
        """
        self.log("compiling the model (torch.compile); the first step takes longer", "info")
        loss_module = distributed.loss_module_of(self.train_module)
        loss_module.loss_fn = CompiledLoss(self.model)
        windows = self.batches.windows  # a batch of the training shape, so it compiles once
        inputs, targets = windows.batch([i % len(windows) for i in range(self.settings.train_batch_size)])
        try:
            self.forward_backward(inputs, targets, micro_steps=1, sync=False)
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            loss_module.loss_fn = self.model.loss
            self.log(f"torch.compile failed ({type(err).__name__}); training in eager mode", "warning")
        finally:
            self.model.zero_grad(set_to_none=True)

    def __call__(self, step: int) -> StepResult:
        """Take optimizer step ``step + 1`` (``step`` steps are done)."""
        s = self.settings
        self.model.train()
        rates = self.optimizer.apply_schedule(s.lr_schedule, step, s.muon_momentum)
        if self.compile_pending:
            self.compile_pending = False
            self.compile()
        total = torch.zeros((), device=self.device)
        micro_steps = s.gradient_accumulation_steps
        for micro in range(micro_steps):
            inputs, targets = next(self.batches)
            total += self.forward_backward(inputs, targets, micro_steps=micro_steps,
                                           sync=micro == micro_steps - 1)
        mean_loss = distributed.mean(self.ranks, total / micro_steps).item()
        layer_norms = self._layer_grad_norms()
        if s.grad_clip > 0:
            total_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        else:
            total_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])
        grad_norm = float(full_tensor(total_norm))
        if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(None, grad_norm if math.isfinite(grad_norm) else float("nan"), layer_norms, rates)
        with self.weights.updating(step + 1):  # a chat never sees half an update, or a wrong step
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(mean_loss, grad_norm, layer_norms, rates)

    def _layer_grad_norms(self) -> tuple[float, ...]:
        """Each decoder layer's gradient norm, with one device sync for all of them."""
        squares = torch.stack([
            torch.stack([torch.linalg.vector_norm(local_tensor(p.grad))
                         for p in layer.parameters() if p.grad is not None]).square().sum()
            for layer in self.model.layers])
        squares = distributed.squared_norms_summed(self.ranks, squares)  # FSDP2: add the shards
        return tuple(squares.sqrt().tolist())
