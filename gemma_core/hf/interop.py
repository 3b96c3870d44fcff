"""Names and config fields shared with Hugging Face transformers' Gemma 3.

Our module names read as the architecture; transformers' follow its class tree.
This adapter renames between the two and translates the config (the
transformers 5.x format, with ``rope_parameters`` keyed by layer type).
"""

from __future__ import annotations

import torch

from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig, default_layer_types
from gemma_core.model.weights import full_state, stored_tensors

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
    return {name_to_hf(name): tensor for name, tensor in stored_tensors(state, cfg).items()}


def state_dict_from_hf(state: dict[str, torch.Tensor], cfg: GemmaConfig) -> dict[str, torch.Tensor]:
    return full_state({name_from_hf(name): tensor for name, tensor in state.items()}, cfg)


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


# ----------------------------------------------------------- config from HF
# Gemma3TextConfig's defaults, for fields a config.json leaves out.
_HF_DEFAULTS = {
    "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
    "head_dim": 256, "max_position_embeddings": 131_072, "query_pre_attn_scalar": 256,
    "sliding_window": 4096, "tie_word_embeddings": True,
}
_HF_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "bfloat16"}


def _unsupported(source: str, field: str, value, why: str) -> UserError:
    return UserError(f"{source}: field {field!r} is {value!r}; {why}, so this checkpoint "
                     "cannot be converted")


def _rope_theta(source: str, name: str, params, default: float) -> float:
    """The base of one layer type's RoPE, refusing scaled variants we do not compute."""
    if params is None:
        return default
    if not isinstance(params, dict):
        raise _unsupported(source, name, params, "expected a mapping of RoPE parameters")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", None):
        raise _unsupported(source, name, params, f"RoPE type {rope_type!r} is not supported "
                                                 "(only plain RoPE)")
    if params.get("factor") not in (None, 1, 1.0):
        raise _unsupported(source, name, params, "scaled RoPE is not supported")
    return float(params.get("rope_theta", default))


def config_from_hf(data: dict, source: str = "config.json") -> GemmaConfig:
    """Our config from a Gemma 3 text config (transformers 5.x or 4.5x format)."""
    def get(key):
        value = data.get(key)
        return _HF_DEFAULTS.get(key) if value is None else value

    # What our model does not compute: refuse rather than import something that differs.
    activation = data.get("hidden_activation") or data.get("hidden_act") or "gelu_pytorch_tanh"
    if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise _unsupported(source, "hidden_activation", activation, "our MLP uses tanh-approximated GELU")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if data.get(key) is not None:
            raise _unsupported(source, key, data[key], "our Gemma 3 has no soft-capping")
    if data.get("attention_bias"):
        raise _unsupported(source, "attention_bias", True, "our attention has no biases")
    if data.get("use_bidirectional_attention"):
        raise _unsupported(source, "use_bidirectional_attention", True, "our attention is causal")
    eps = data.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or abs(eps - 1e-6) > 1e-12:
        raise _unsupported(source, "rms_norm_eps", eps, "our RMSNorm uses 1e-6")

    # RoPE: 5.x keys rope_parameters by layer type; 4.5x has rope_theta, rope_local_base_freq
    # and rope_scaling (which applies to the global layers).
    rope = data.get("rope_parameters")
    if isinstance(rope, dict) and ("full_attention" in rope or "sliding_attention" in rope):
        rope_base = _rope_theta(source, "rope_parameters", rope.get("full_attention"), 1_000_000.0)
        rope_local = _rope_theta(source, "rope_parameters", rope.get("sliding_attention"), 10_000.0)
    else:
        full = rope if isinstance(rope, dict) else data.get("rope_scaling")
        field = "rope_parameters" if isinstance(rope, dict) else "rope_scaling"
        rope_base = _rope_theta(source, field, full, float(data.get("rope_theta") or 1_000_000.0))
        rope_local = float(data.get("rope_local_base_freq") or 10_000.0)

    n_layers = get("num_hidden_layers")
    layer_types = data.get("layer_types")
    if layer_types is None:
        layer_types = default_layer_types(n_layers, int(data.get("sliding_window_pattern") or 6))
    dtype = data.get("dtype") or data.get("torch_dtype") or "bfloat16"
    scalar = get("query_pre_attn_scalar")
    fields = dict(
        vocab_size=get("vocab_size"), context_length=get("max_position_embeddings"),
        emb_dim=get("hidden_size"), n_heads=get("num_attention_heads"), n_layers=n_layers,
        hidden_dim=get("intermediate_size"), head_dim=get("head_dim"), qk_norm=True,
        n_kv_groups=get("num_key_value_heads"), rope_local_base=rope_local, rope_base=rope_base,
        sliding_window=get("sliding_window"), layer_types=list(layer_types),
        dtype=_HF_DTYPES.get(str(dtype).replace("torch.", ""), "bfloat16"),
        query_pre_attn_scalar=float(scalar) if isinstance(scalar, (int, float)) else scalar,
        tie_embeddings=get("tie_word_embeddings"),
    )
    return GemmaConfig.from_dict(fields, source=source)
