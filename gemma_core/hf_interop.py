"""Names and config fields shared with Hugging Face transformers' Gemma 3.

Our module names read as the architecture; transformers' follow its class tree.
This adapter renames between the two and translates the config (the
transformers 5.x format, with ``rope_parameters`` keyed by layer type).
"""

from __future__ import annotations

import torch

from gemma_core.config import GemmaConfig

# Inside a decoder layer: our name -> transformers' name.
_LAYER_NAMES = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.o_proj": "self_attn.o_proj",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
    "mlp.gate_proj": "mlp.gate_proj",
    "mlp.up_proj": "mlp.up_proj",
    "mlp.down_proj": "mlp.down_proj",
    "input_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "pre_feedforward_norm": "pre_feedforward_layernorm",
    "post_feedforward_norm": "post_feedforward_layernorm",
}
_TOP_NAMES = {
    "embed_tokens.weight": "model.embed_tokens.weight",
    "final_norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def name_to_hf(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    _, index, rest = name.split(".", 2)  # "layers", i, "<module>.weight"
    module, param = rest.rsplit(".", 1)
    return f"model.layers.{index}.{_LAYER_NAMES[module]}.{param}"


def name_from_hf(name: str) -> str:
    for ours, theirs in _TOP_NAMES.items():
        if name == theirs:
            return ours
    prefix, layers, index, rest = name.split(".", 3)
    if (prefix, layers) != ("model", "layers"):
        raise KeyError(name)
    module, param = rest.rsplit(".", 1)
    for ours, theirs in _LAYER_NAMES.items():
        if module == theirs:
            return f"layers.{index}.{ours}.{param}"
    raise KeyError(name)


def state_dict_to_hf(state: dict[str, torch.Tensor], cfg: GemmaConfig) -> dict[str, torch.Tensor]:
    """Our state dict in transformers' names; a tied head is left out, as transformers saves it."""
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        out[name_to_hf(name)] = tensor
    return out


def state_dict_from_hf(state: dict[str, torch.Tensor], cfg: GemmaConfig) -> dict[str, torch.Tensor]:
    out = {name_from_hf(name): tensor for name, tensor in state.items()}
    if cfg.tie_embeddings or "lm_head.weight" not in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def config_to_hf(cfg: GemmaConfig, *, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, bos_token_id: int | None = None) -> dict:
    """The fields of transformers' ``Gemma3TextConfig`` (5.x) for this model."""
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.emb_dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_groups,
        "head_dim": cfg.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": 1e-6,
        # transformers validates this field as an int.
        "query_pre_attn_scalar": (int(cfg.query_pre_attn_scalar)
                                  if float(cfg.query_pre_attn_scalar).is_integer()
                                  else cfg.query_pre_attn_scalar),
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.layer_types),
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_base},
            "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_base},
        },
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
    }
