"""The training loss under torch.compile, compiled region by region.

Each decoder layer is compiled on its own, and so is the head (final norm, LM
head, float32 cross-entropy). Layers of one kind share their compiled code, so
compile time does not grow with depth; fusing the head keeps the float32 logits
out of memory. On the demo model with two CPU cores this compiles faster than the
whole loss as one graph, and steps faster (the figures: BENCHMARKS.md).

Only the training calls go through the compiled code: evaluation and generation
run the plain model, whose shapes vary from call to call.
"""

from __future__ import annotations

import torch

from gemma_core.model.model import Gemma3Model


class CompiledLoss:
    def __init__(self, model: Gemma3Model) -> None:
        self.model = model
        self.layers = [torch.compile(layer) for layer in model.layers]
        self.head_loss = torch.compile(model.head_loss)

    def __call__(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # RoPE tables are built on first use; built inside compiled code, that first
        # use would change the layer under the compiler's feet and force a recompile.
        for layer in self.model.layers:
            layer.attn.rope.reserve(input_ids.shape[1], input_ids.device)
        return self.head_loss(self.model.hidden_states(input_ids, layers=self.layers), targets)
