"""Presets have the documented sizes; an invalid config names the field at fault."""

from __future__ import annotations

import json

import pytest
import torch

from gemma_core.errors import UserError
from gemma_core.model.config import ConfigError, GemmaConfig, default_layer_types
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import PRESETS, preset


def count_on_meta(name: str) -> int:
    with torch.device("meta"):  # never allocates
        return Gemma3Model(preset(name)).num_parameters()


def test_seed_preset_has_the_seed_parameter_count():
    assert count_on_meta("seed-270m") == 164_654_976


def test_gemma_3_270m_preset_counts_unique_parameters_with_a_tied_head():
    assert count_on_meta("gemma-3-270m") == 268_098_176


def test_demo_and_nano_sizes():
    assert 5_000_000 <= count_on_meta("demo") <= 15_000_000
    assert count_on_meta("nano") < 1_000_000


def test_every_preset_keeps_gemma_3_shape():
    for name, record in PRESETS.items():
        cfg = record.config
        assert cfg.n_kv_groups == 1, name  # multi-query attention
        assert cfg.qk_norm, name
        assert {"sliding_attention", "full_attention"} <= set(cfg.layer_types), name
        assert cfg.rope_local_base == 10_000 and cfg.rope_base == 1_000_000, name


def test_default_layer_pattern_is_five_sliding_to_one_full():
    types = default_layer_types(18)
    assert [i for i, kind in enumerate(types) if kind == "full_attention"] == [5, 11, 17]


def test_seed_config_json_round_trips(tmp_path):
    cfg = preset("seed-270m")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert GemmaConfig.from_json(path) == cfg
    # The seed's own files wrote torch dtypes as text.
    data = cfg.to_dict() | {"dtype": "torch.bfloat16"}
    path.write_text(json.dumps(data))
    assert GemmaConfig.from_json(path).dtype == "bfloat16"


INVALID = [
    ("layer_types", dict(layer_types=["sliding_attention"] * 17), "has 17 entries but n_layers is 18"),
    ("layer_types", dict(layer_types=["sliding_attention"] * 17 + ["global"]), "entry 17 is 'global'"),
    ("n_heads", dict(n_heads=4, n_kv_groups=3), "not divisible by n_kv_groups=3"),
    ("emb_dim", dict(emb_dim=0), "must be positive"),
    ("n_layers", dict(n_layers=-2), "must be positive"),
    ("sliding_window", dict(sliding_window=0), "must be positive"),
    ("vocab_size", dict(vocab_size=1.5), "must be a whole number"),
    ("rope_base", dict(rope_base=-1.0), "must be positive"),
    ("dtype", dict(dtype="float16"), "overflows in float16"),
]


@pytest.mark.parametrize("field,change,message", INVALID, ids=[f"{c[0]}:{c[2][:20]}" for c in INVALID])
def test_invalid_config_names_the_field(field, change, message):
    data = preset("seed-270m").to_dict() | change
    with pytest.raises(ConfigError) as caught:
        GemmaConfig.from_dict(data, source="my.json")
    assert caught.value.field == field
    assert message in str(caught.value)
    assert str(caught.value).startswith("my.json: field")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="seed-270m, gemma-3-270m, demo, nano"):
        preset("gemma-9000")


def test_malformed_config_json_is_a_user_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        GemmaConfig.from_json(path)
