"""Build transformers' Gemma3ForCausalLM with exactly our weights, for side-by-side runs."""

from __future__ import annotations

import torch

from gemma_core.hf.interop import config_to_hf, state_dict_to_hf
from gemma_core.model.model import Gemma3Model


def transformers_twin(model: Gemma3Model, attn_implementation: str = "sdpa") -> torch.nn.Module:
    import transformers

    fields = {k: v for k, v in config_to_hf(model.cfg).items() if k not in ("architectures", "model_type")}
    config = transformers.Gemma3TextConfig(**fields, attn_implementation=attn_implementation)
    twin = transformers.Gemma3ForCausalLM(config)
    twin.load_state_dict(state_dict_to_hf(model.state_dict(), model.cfg), strict=False)
    return twin
