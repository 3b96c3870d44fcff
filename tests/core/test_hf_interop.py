"""Hugging Face interop: export-hf, import-hf and tokenizer.json, checked against transformers."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import tiny_config

from gemma_core.cli.hf import add_commands
from gemma_core.errors import UserError
from gemma_core.hf.exporter import export_hf
from gemma_core.hf.importer import import_hf
from gemma_core.hf.interop import config_from_hf, config_to_hf
from gemma_core.model.generation import SamplingParams, generate_tokens, stream_text
from gemma_core.model.model import Gemma3Model
from gemma_core.run import model_dir as checkpoint_module
from gemma_core.run.model_dir import load_model_dir, save_model_dir
from gemma_core.tokenizers.hf_json import (
    PROBE_TEXT,
    HFTokenizer,
    build_hf_tokenizer,
    hf_tokenizer_from_spec,
    ranks_from_tokenizer_json,
    require_tokenizers,
)
from gemma_core.tokenizers.tokenizer import load_tokenizer
from gemma_core.tokenizers.tokenizer_files import tokenizer_from_spec

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

MIXED_TEXT = ("The quick brown fox, aged 42, didn't jump over 1,000,000 lazy dogs!\n"
              "  Indented line\twith tab; naïve café — 東京 😀 ∑x² = 3.14159...\r\n\n"
              "O Romeo, Romeo! wherefore art thou Romeo?   \n")
SHAKESPEARE_VOCAB = 4096  # shakespeare-4k: 4,095 ranks + <|endoftext|>


def randomised(model: Gemma3Model) -> Gemma3Model:
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval()


def ours_checkpoint(directory, tie: bool, tokenizer_name: str = "shakespeare-4k"):
    model = randomised(Gemma3Model(tiny_config(vocab_size=SHAKESPEARE_VOCAB, tie_embeddings=tie)))
    save_model_dir(directory, model, load_tokenizer(tokenizer_name))
    return model


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def ids_past_window(cfg, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, 5 * cfg.sliding_window))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One of ours (untied, shakespeare-4k) exported through the CLI."""
    root = tmp_path_factory.mktemp("exported")
    torch.manual_seed(1)
    model = ours_checkpoint(root / "ours", tie=False)
    assert run_cli(["export-hf", "--checkpoint", str(root / "ours"), "--output", str(root / "hf")]) == 0
    return model, root


# ------------------------------------------------------------------ (a) import
def test_transformers_model_imports_with_matching_logits(tmp_path):
    cfg = tiny_config(vocab_size=SHAKESPEARE_VOCAB, n_kv_groups=2, tie_embeddings=True)
    fields = {k: v for k, v in config_to_hf(cfg).items() if k not in ("architectures", "model_type")}
    hf_model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**fields))
    with torch.no_grad():
        for param in hf_model.parameters():
            param.normal_(0.0, 0.3)
    hf_model.eval()
    # Small shards, so the sharded index path is the one read.
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()

    assert run_cli(["import-hf", str(tmp_path / "hf"), "--output", str(tmp_path / "ours"),
                    "--tokenizer", "shakespeare-4k"]) == 0
    model, tokenizer, _ = load_model_dir(tmp_path / "ours")
    assert model.cfg.layer_types == cfg.layer_types and model.cfg.tie_embeddings
    assert model.cfg.sliding_window == cfg.sliding_window
    ids = ids_past_window(model.cfg)
    with torch.no_grad():
        diff = (model(ids) - hf_model(ids).logits).abs().max().item()
    assert diff <= 1e-4


# ------------------------------------------------------------------ (b) export
def test_export_loads_in_transformers_with_matching_logits(exported):
    model, root = exported
    hf_dir = root / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["model_type"] == "gemma3_text"
    assert config["eos_token_id"] == 4095 and not config["tie_word_embeddings"]
    assert json.loads((hf_dir / "generation_config.json").read_text())["eos_token_id"] == 4095
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert type(hf_model).__name__ == "Gemma3ForCausalLM"
    assert hf_model.config.layer_types == model.cfg.layer_types
    ids = ids_past_window(model.cfg)
    with torch.no_grad():
        diff = (model(ids) - hf_model(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_export_refuses_a_non_empty_output_unless_overwrite(exported):
    _, root = exported
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        export_hf(root / "ours", root / "hf")
    export_hf(root / "ours", root / "hf", overwrite=True)


# ------------------------------------------------------------- (c) round trip
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_export_then_import_gives_identical_tensors(tmp_path, tie):
    model = ours_checkpoint(tmp_path / "ours", tie=tie)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "back")
    back, tokenizer, data = load_model_dir(tmp_path / "back")
    assert back.cfg.to_dict() == model.cfg.to_dict()
    state = model.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # The exported tokenizer.json came back as tiktoken ranks.
    assert data["tokenizer"]["kind"] == "file" and (tmp_path / "back" / "tokenizer.tiktoken").is_file()
    assert tokenizer.encode(MIXED_TEXT) == load_tokenizer("shakespeare-4k").encode(MIXED_TEXT)


# ---------------------------------------------------------- (d) generation
def test_round_trip_generates_the_same_text_greedily(exported, tmp_path):
    _, root = exported
    import_hf(root / "hf", tmp_path / "back")
    params = SamplingParams(max_new_tokens=40, temperature=0, stop_at_eos=False)
    prompt = "ROMEO:\nBut soft, what light"
    runs = []
    for directory in (root / "ours", tmp_path / "back"):
        model, tokenizer, _ = load_model_dir(directory)
        tokens = list(generate_tokens(model, tokenizer.encode(prompt), params, tokenizer.eos_id))
        runs.append((tokens, list(stream_text(model, tokenizer, prompt, params))))
    assert len(runs[0][0]) == 40
    assert runs[0] == runs[1]


# ----------------------------------------------------------- (e) tokenizer
@pytest.mark.parametrize("name", ["gpt2", "shakespeare-4k"])
def test_tokenizer_json_encodes_like_tiktoken(tmp_path, name):
    tokenizer = load_tokenizer(name)
    path = tmp_path / "tokenizer.json"
    path.write_text(build_hf_tokenizer(tokenizer).to_str())
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>")
    for text in (MIXED_TEXT, PROBE_TEXT):
        ids = tokenizer.encode(text)
        assert fast.encode(text, add_special_tokens=False) == ids
        assert fast.decode(ids) == text
    assert fast.eos_token_id == tokenizer.eos_id
    # And it converts back to the same ranks and pattern.
    ranks, pattern = ranks_from_tokenizer_json(json.loads(path.read_text()))
    assert ranks == tokenizer.encoding._mergeable_ranks and pattern == tokenizer.pattern


def test_auto_tokenizer_loads_the_export(exported):
    _, root = exported
    tokenizer = load_tokenizer("shakespeare-4k")
    auto = transformers.AutoTokenizer.from_pretrained(root / "hf")
    assert auto(MIXED_TEXT)["input_ids"] == tokenizer.encode(MIXED_TEXT)
    assert auto.eos_token_id == tokenizer.eos_id


def _sentencepiece_style_tokenizer_json(path) -> None:
    """A tiny tokenizer.json shaped like Gemma's: byte fallback, '▁' for spaces."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁w", "hell", "hello"]:
        vocab[piece] = len(vocab)
    merges = [("h", "e"), ("l", "l"), ("▁", "w"), ("he", "ll"), ("hell", "o")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<pad>", "<eos>", "<bos>", "<unk>")])
    tok.save(str(path))


def test_sentencepiece_style_tokenizer_is_kept_as_tokenizer_json(tmp_path, monkeypatch):
    cfg = tiny_config(vocab_size=273)
    fields = {k: v for k, v in config_to_hf(cfg, eos_token_id=1).items()
              if k not in ("architectures", "model_type")}
    transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**fields)).save_pretrained(tmp_path / "hf")
    _sentencepiece_style_tokenizer_json(tmp_path / "hf" / "tokenizer.json")
    assert isinstance(ranks_from_tokenizer_json(json.loads((tmp_path / "hf" / "tokenizer.json").read_text())), str)

    import_hf(tmp_path / "hf", tmp_path / "ours")
    data = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert data["tokenizer"]["kind"] == "hf" and data["tokenizer"]["eos_id"] == 1
    tokenizer = hf_tokenizer_from_spec(data["tokenizer"], tmp_path / "ours")
    text = "hello world é <eos>"
    ids = tokenizer.encode(text)
    assert 1 not in ids  # special-token text is text, as with tiktoken's encode_ordinary
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(i) for i in ids).decode("utf-8") == text
    assert tokenizer.eos_id == 1 and tokenizer.n_vocab == 273

    # The dispatch tokenizer_from_spec needs (applied here by hand) loads the checkpoint.
    def dispatch(spec, directory=None):
        if spec.get("kind") == "hf":
            return hf_tokenizer_from_spec(spec, directory)
        return tokenizer_from_spec(spec, directory)

    monkeypatch.setattr(checkpoint_module, "tokenizer_from_spec", dispatch)
    model, loaded, _ = load_model_dir(tmp_path / "ours")
    assert isinstance(loaded, HFTokenizer)
    params = SamplingParams(max_new_tokens=5, temperature=0, stop_at_eos=False)
    assert len(list(stream_text(model, loaded, "hello", params))) >= 1


# ------------------------------------------------------------- config formats
def test_config_from_hf_reads_the_4_5x_flat_format():
    cfg = config_from_hf({
        "model_type": "gemma3_text", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
        "max_position_embeddings": 256, "query_pre_attn_scalar": 24, "sliding_window": 16,
        "sliding_window_pattern": 6, "rope_theta": 500_000.0, "rope_local_base_freq": 5_000.0,
        "rope_scaling": None, "torch_dtype": "bfloat16", "tie_word_embeddings": False})
    assert cfg.layer_types == ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"]
    assert (cfg.rope_base, cfg.rope_local_base, cfg.dtype) == (500_000.0, 5_000.0, "bfloat16")
    assert config_from_hf({**config_to_hf(tiny_config()), "dtype": "float32"}).to_dict() == tiny_config().to_dict()
    with pytest.raises(UserError, match="rope_scaling"):
        config_from_hf({"rope_scaling": {"rope_type": "linear", "factor": 8.0}})


# ------------------------------------------------------------------ (f) errors
def test_import_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="directory not found") as err:
        import_hf(tmp_path / "nowhere", tmp_path / "out")
    assert "\n" not in str(err.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json: missing"):
        import_hf(tmp_path / "empty", tmp_path / "out")

    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    with pytest.raises(UserError, match="is not Gemma 3") as err:
        import_hf(tmp_path / "llama", tmp_path / "out")
    assert "\n" not in str(err.value)


def test_import_refuses_weights_that_do_not_match_the_config(tmp_path):
    ours_checkpoint(tmp_path / "ours", tie=True)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = 128
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="has shape"):
        import_hf(tmp_path / "hf", tmp_path / "back")


def test_missing_tokenizers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(UserError, match=r"gemma-studio\[hf\]"):
        require_tokenizers()


def test_multimodal_gemma3_config_imports_its_language_model(tmp_path):
    from safetensors.torch import load_file, save_file

    model = ours_checkpoint(tmp_path / "ours", tie=True)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    text_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": text_config, "vision_config": {"model_type": "siglip_vision_model"}}))
    weights = {"language_model." + name: tensor
               for name, tensor in load_file(tmp_path / "hf" / "model.safetensors").items()}
    weights["vision_tower.vision_model.post_layernorm.weight"] = torch.ones(8)
    save_file(weights, tmp_path / "mm" / "model.safetensors")
    import_hf(tmp_path / "mm", tmp_path / "back", tokenizer="shakespeare-4k")
    back, _, _ = load_model_dir(tmp_path / "back")
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


# ----------------------------------------------------------- Gemma's <bos>
def _gemma_like_checkpoint(root, *, template: bool, tokenizer_config: dict | None):
    """A tiny HF Gemma 3 with a tokenizer shaped like Gemma's, <bos> = 2."""
    from tokenizers import Tokenizer, processors

    cfg = tiny_config(vocab_size=273)
    fields = {k: v for k, v in config_to_hf(cfg, eos_token_id=1, bos_token_id=2, pad_token_id=0).items()
              if k not in ("architectures", "model_type")}
    transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**fields)).save_pretrained(root)
    _sentencepiece_style_tokenizer_json(root / "tokenizer.json")
    if template:  # how Gemma's own tokenizer.json puts <bos> first
        tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
        tok.save(str(root / "tokenizer.json"))
    if tokenizer_config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


@pytest.mark.parametrize("template, tokenizer_config", [
    (True, {"add_bos_token": True, "bos_token": "<bos>", "eos_token": "<eos>"}),  # Gemma's files
    (True, None),  # only the post-processor says so
])
def test_gemma_documents_prompts_and_exports_start_with_bos(tmp_path, monkeypatch, template,
                                                            tokenizer_config):
    from gemma_core.data.token_cache import InMemoryDocuments, build_token_cache
    from gemma_core.model import generation

    _gemma_like_checkpoint(tmp_path / "hf", template=template, tokenizer_config=tokenizer_config)
    import_hf(tmp_path / "hf", tmp_path / "ours")
    spec = json.loads((tmp_path / "ours" / "config.json").read_text())["tokenizer"]
    assert spec["bos_id"] == 2
    monkeypatch.setattr(checkpoint_module, "tokenizer_from_spec",
                        lambda s, d=None: hf_tokenizer_from_spec(s, d))
    model, tokenizer, _ = load_model_dir(tmp_path / "ours")
    assert tokenizer.bos_id == 2

    hello, world = tokenizer.encode("hello"), tokenizer.encode("world")
    shards = build_token_cache(InMemoryDocuments("test", ["hello", "world"]), tokenizer,
                               cache_dir=tmp_path / "cache")
    assert shards.tokens.tolist() == [2, *hello, 1, 2, *world]  # BOS doc EOS BOS doc

    prompts = []
    real = generation.generate_tokens
    monkeypatch.setattr(generation, "generate_tokens",
                        lambda m, ids, *a, **k: prompts.append(list(ids)) or real(m, ids, *a, **k))
    list(stream_text(model, tokenizer, "hello", SamplingParams(max_new_tokens=2, temperature=0)))
    assert prompts == [[2, *hello]]

    export_hf(tmp_path / "ours", tmp_path / "back")
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    tokenizer_settings = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    generation_config = json.loads((tmp_path / "back" / "generation_config.json").read_text())
    assert config["bos_token_id"] == generation_config["bos_token_id"] == 2
    assert tokenizer_settings["add_bos_token"] is True and tokenizer_settings["bos_token"] == "<bos>"
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    assert loaded("hello")["input_ids"][0] == 2


def test_a_tokenizer_without_bos_adds_none(tmp_path):
    _gemma_like_checkpoint(tmp_path / "hf", template=False,
                           tokenizer_config={"add_bos_token": False, "bos_token": "<bos>"})
    import_hf(tmp_path / "hf", tmp_path / "ours")
    spec = json.loads((tmp_path / "ours" / "config.json").read_text())["tokenizer"]
    assert spec["bos_id"] is None
    tokenizer = hf_tokenizer_from_spec(spec, tmp_path / "ours")
    assert tokenizer.encode_document("hello") == tokenizer.encode("hello")


GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_an_instruction_tuned_import_keeps_its_chat_template_for_the_openai_api(tmp_path, monkeypatch):
    import safetensors.torch
    from tokenizers import AddedToken, Tokenizer

    from gemma_core.serve.openai_api import Limits, parse_chat

    _gemma_like_checkpoint(tmp_path / "hf", template=True,
                           tokenizer_config={"add_bos_token": True, "bos_token": "<bos>",
                                             "chat_template": GEMMA_CHAT_TEMPLATE})
    tok = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<start_of_turn>", "<end_of_turn>")])
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["vocab_size"] = 275  # room for the two turn markers
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    weights = safetensors.torch.load_file(str(tmp_path / "hf" / "model.safetensors"))
    weights = {k: (torch.cat([v, torch.zeros(2, v.shape[1])]) if v.shape[0] == 273 else v) for k, v in weights.items()}
    safetensors.torch.save_file(weights, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})

    import_hf(tmp_path / "hf", tmp_path / "ours")
    spec = json.loads((tmp_path / "ours" / "config.json").read_text())["tokenizer"]
    assert spec["chat_template"] == GEMMA_CHAT_TEMPLATE
    tokenizer = hf_tokenizer_from_spec(spec, tmp_path / "ours")
    request = parse_chat({"model": "ours", "messages": [{"role": "user", "content": "hello"}]}, Limits(),
                         tokenizer)
    assert request.prompt == "<bos><start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n"
    turn_start = tokenizer.encode_document("<start_of_turn>", special_tokens=True)[1:]
    assert len(turn_start) == 1  # read as the special token, not as text
    ids = tokenizer.encode_document(request.prompt, special_tokens=True)
    assert ids[0] == 2 and ids.count(2) == 1 and ids[1] == turn_start[0]  # one BOS, then the turn marker
    assert request.special_tokens and request.stop_token_ids == (tokenizer.encoding._special_tokens["<end_of_turn>"],)
