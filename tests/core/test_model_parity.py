"""Our Gemma 3 computes exactly what transformers' Gemma3ForCausalLM computes."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from gemma_core.hf.interop import config_to_hf, state_dict_from_hf, state_dict_to_hf
from gemma_core.model.attention import available_kernels
from gemma_core.model.model import Gemma3Model

transformers = pytest.importorskip("transformers")


def randomised(model: Gemma3Model) -> Gemma3Model:
    """Random weights everywhere, norms included, so no term hides behind a zero."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def hf_twin(model: Gemma3Model) -> torch.nn.Module:
    fields = {k: v for k, v in config_to_hf(model.cfg).items() if k not in ("architectures", "model_type")}
    hf_config = transformers.Gemma3TextConfig(**fields, attn_implementation="eager")
    hf_model = transformers.Gemma3ForCausalLM(hf_config).eval()
    result = hf_model.load_state_dict(state_dict_to_hf(model.state_dict(), model.cfg), strict=False)
    # transformers lists a tied head as a key of its own; it shares the embedding's storage.
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= ({"lm_head.weight"} if model.cfg.tie_embeddings else set())
    return hf_model


CASES = {
    "mqa-untied": dict(n_kv_groups=1, tie_embeddings=False),
    "gqa-tied": dict(n_kv_groups=2, tie_embeddings=True),
    "gemma-pattern-7-layers": dict(n_layers=7, layer_types=None),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernel", available_kernels("cpu"))
def test_logits_match_transformers_past_the_sliding_window(case, kernel):
    overrides = dict(CASES[case])
    if overrides.get("layer_types", "") is None:
        overrides["layer_types"] = []  # Gemma's default rule: full at layer 5
    model = randomised(Gemma3Model(tiny_config(**overrides))).eval()
    assert {"sliding_attention", "full_attention"} <= set(model.cfg.layer_types)
    reference = hf_twin(model)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 5 * model.cfg.sliding_window))

    model.set_attention_kernel(kernel)
    with torch.no_grad():
        ours, theirs = model(ids), reference(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_state_dict_round_trips_through_transformers_names():
    model = Gemma3Model(tiny_config())
    back = state_dict_from_hf(state_dict_to_hf(model.state_dict(), model.cfg), model.cfg)
    assert set(back) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(back[name], tensor)


def test_tied_export_omits_lm_head_like_transformers():
    model = Gemma3Model(tiny_config(tie_embeddings=True))
    names = state_dict_to_hf(model.state_dict(), model.cfg)
    assert "lm_head.weight" not in names
    assert "model.layers.0.self_attn.q_norm.weight" in names
    assert "model.layers.2.post_feedforward_layernorm.weight" in names
