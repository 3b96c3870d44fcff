"""``gemma-core export-gguf``: one GGUF file that llama.cpp (and so Ollama and LM Studio) runs.

The file is read back with gguf's own reader: every tensor (llama.cpp's names, our
values after the documented transforms) and every key. Where llama-cpp-python is
installed, llama.cpp itself loads the file and must tokenize and decode as we do.
"""

from __future__ import annotations

import errno
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

gguf = pytest.importorskip("gguf")

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works
from gemma_core.hf import gguf_export
from gemma_core.hf.gguf_export import export_gguf, sliding_window_pattern
from gemma_core.hf.importer import import_hf
from gemma_core.model.config import FULL, SLIDING
from gemma_core.model.generation import generate_tokens
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import PRESETS, preset
from gemma_core.model.sampling import SamplingParams
from gemma_core.run.model_dir import load_model_dir, save_model_dir
from gemma_core.tokenizers.byte_alphabet import bytes_to_unicode
from gemma_core.tokenizers.hf_json import PROBE_TEXT
from gemma_core.tokenizers.tokenizer import EOS_TOKEN, from_ranks_file, load_tokenizer, train_bpe, write_ranks
from tests.end_to_end.test_hostile_input import assert_one_line_refusal, run

SHAKESPEARE_VOCAB = 4096
NORMAL, UNKNOWN, CONTROL, UNUSED, BYTE = 1, 2, 3, 5, 6
TYPES = gguf.GGMLQuantizationType


# ------------------------------------------------------------------ helpers
def randomised(model: Gemma3Model, std: float = 0.3) -> Gemma3Model:
    """Every weight random, norms included, so a forgotten transform shows."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
    return model.eval()


def checkpoint(directory: Path, tokenizer, **config) -> Gemma3Model:
    torch.manual_seed(0)
    model = randomised(Gemma3Model(tiny_config(**config)))
    save_model_dir(directory, model, tokenizer)
    return model


def read_back(path: Path) -> tuple[dict, dict]:
    """(keys -> values, tensor name -> (GGML type, float32 array in our orientation))."""
    reader = gguf.GGUFReader(path)
    keys = {name: field.contents() for name, field in reader.fields.items()
            if not name.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                                  dtype=np.float32).reshape(tuple(reversed(t.shape.tolist()))))
               for t in reader.tensors}
    return keys, tensors


def expected_tensors(model: Gemma3Model) -> dict[str, torch.Tensor]:
    """Our tensors as llama.cpp needs them: norms + 1, the query norm also scaled so that
    llama.cpp's 1/sqrt(head_dim) gives our query_pre_attn_scalar, a tied head stored once."""
    cfg = model.cfg
    q_factor = math.sqrt(cfg.head_dim / cfg.query_pre_attn_scalar)
    names = {"input_norm": "attn_norm", "attn.q_proj": "attn_q", "attn.k_proj": "attn_k",
             "attn.v_proj": "attn_v", "attn.o_proj": "attn_output", "attn.q_norm": "attn_q_norm",
             "attn.k_norm": "attn_k_norm", "post_attention_norm": "post_attention_norm",
             "pre_feedforward_norm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "post_feedforward_norm": "post_ffw_norm"}
    out = {"token_embd.weight": model.embed_tokens.weight, "output_norm.weight": model.final_norm.weight + 1}
    if not cfg.tie_embeddings:
        out["output.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.layers):
        for ours, theirs in names.items():
            value = layer.get_submodule(ours).weight
            if ours.endswith("norm"):
                value = value + 1
            if ours == "attn.q_norm":
                value = value * q_factor
            out[f"blk.{i}.{theirs}.weight"] = value
    return {name: value.detach().float() for name, value in out.items()}


@pytest.fixture(scope="module")
def shakespeare():
    return load_tokenizer("shakespeare-4k")


# ------------------------------------------------------------------ tensors
@pytest.mark.parametrize("tie", [True, False])
def test_every_tensor_is_written_under_llama_cpp_names_with_our_values(tmp_path, shakespeare, tie):
    # query_pre_attn_scalar 24 is not head_dim 32: the query norm must carry the difference.
    model = checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB, tie_embeddings=tie,
                       n_kv_groups=2)
    export_gguf(tmp_path / "ours", tmp_path / "model.gguf")
    _, tensors = read_back(tmp_path / "model.gguf")
    expected = expected_tensors(model)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        kind, got = tensors[name]
        assert kind == TYPES.F32, name
        assert got.shape == tuple(want.shape), name
        np.testing.assert_array_equal(got, want.numpy(), err_msg=name)


@pytest.mark.parametrize("tensor_type, matrix_type, tolerance", [
    ("f16", TYPES.F16, 2e-3), ("bf16", TYPES.BF16, 1e-2), ("q8_0", TYPES.Q8_0, 2e-2)])
def test_smaller_types_store_matrices_compactly_and_norms_exactly(tmp_path, shakespeare, tensor_type,
                                                                 matrix_type, tolerance):
    # hidden_dim 80: ffn_down's rows (80 long) are not whole Q8_0 blocks of 32.
    model = checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB, hidden_dim=80)
    export_gguf(tmp_path / "ours", tmp_path / "f32.gguf")
    export_gguf(tmp_path / "ours", tmp_path / "small.gguf", tensor_type=tensor_type)
    keys, tensors = read_back(tmp_path / "small.gguf")
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    assert keys["general.file_type"] == file_types[tensor_type]
    for name, want in expected_tensors(model).items():
        kind, got = tensors[name]
        if want.ndim == 1:
            assert kind == TYPES.F32, name
            np.testing.assert_array_equal(got, want.numpy(), err_msg=name)
            continue
        row_fits = want.shape[-1] % 32 == 0
        assert kind == (matrix_type if row_fits or tensor_type != "q8_0" else TYPES.F32), name
        scale = float(want.abs().max())
        np.testing.assert_allclose(got, want.numpy(), atol=tolerance * scale, rtol=0, err_msg=name)
    assert (tmp_path / "small.gguf").stat().st_size < 0.6 * (tmp_path / "f32.gguf").stat().st_size


# -------------------------------------------------------------------- keys
def test_every_hyperparameter_key_says_what_the_config_says(tmp_path, shakespeare):
    layout = [SLIDING, FULL, SLIDING, SLIDING, FULL]
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB, n_layers=5, layer_types=layout,
               n_kv_groups=2, context_length=384, sliding_window=24, rope_local_base=12_345.0,
               rope_base=654_321.0)
    export_gguf(tmp_path / "ours", tmp_path / "model.gguf")
    keys, _ = read_back(tmp_path / "model.gguf")
    cfg = tiny_config(vocab_size=SHAKESPEARE_VOCAB, n_layers=5, layer_types=layout, n_kv_groups=2)
    assert keys["general.architecture"] == "gemma3"
    assert keys["general.name"] == "ours"
    assert keys["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert keys["gemma3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert {k: v for k, v in keys.items() if k.startswith("gemma3.") and "epsilon" not in k} == {
        "gemma3.context_length": 384,
        "gemma3.embedding_length": cfg.emb_dim,
        "gemma3.block_count": 5,
        "gemma3.feed_forward_length": cfg.hidden_dim,
        "gemma3.attention.head_count": cfg.n_heads,
        "gemma3.attention.head_count_kv": 2,
        "gemma3.attention.key_length": cfg.head_dim,
        "gemma3.attention.value_length": cfg.head_dim,
        "gemma3.rope.freq_base": 654_321.0,
        "gemma3.rope.freq_base_swa": 12_345.0,
        "gemma3.attention.sliding_window": 24,
        "gemma3.attention.sliding_window_pattern": [True, False, True, True, False],
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_presets_layer_layout_is_written_layer_by_layer(name):
    layer_types = PRESETS[name].config.layer_types
    pattern = sliding_window_pattern(layer_types)
    assert pattern == [kind == SLIDING for kind in layer_types]
    # llama.cpp's default when the key is absent (every sixth layer full) is right only for
    # Gemma's own 5:1 layout, which is why the key is always written.
    llama_default = [(i % 6) < 5 for i in range(len(layer_types))]
    assert (pattern == llama_default) == all(
        kind == (FULL if (i + 1) % 6 == 0 else SLIDING) for i, kind in enumerate(layer_types))


def test_the_nano_layout_differs_from_llama_cpp_default_and_is_written_as_is(tmp_path, shakespeare):
    cfg = preset("nano")
    save_model_dir(tmp_path / "nano", Gemma3Model(cfg), shakespeare)
    export_gguf(tmp_path / "nano", tmp_path / "nano.gguf")
    keys, _ = read_back(tmp_path / "nano.gguf")
    assert keys["gemma3.attention.sliding_window_pattern"] == [True, False]
    assert keys["gemma3.attention.sliding_window"] == cfg.sliding_window


def test_a_model_without_sliding_layers_writes_no_window(tmp_path, shakespeare):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB, layer_types=[FULL, FULL, FULL])
    export_gguf(tmp_path / "ours", tmp_path / "model.gguf")
    keys, _ = read_back(tmp_path / "model.gguf")
    assert not any("sliding_window" in key or "freq_base_swa" in key for key in keys)


# --------------------------------------------------------------- tokenizers
def spelled(token: bytes) -> str:
    return "".join(bytes_to_unicode()[b] for b in token)


def assert_byte_level_vocab(keys: dict, tokenizer, vocab_size: int, pre: str) -> None:
    n = tokenizer.n_vocab
    eos = tokenizer.eos_id
    assert keys["tokenizer.ggml.model"] == "gpt2"
    assert keys["tokenizer.ggml.pre"] == pre
    tokens, types = keys["tokenizer.ggml.tokens"], keys["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == vocab_size
    assert tokens[:n] == [EOS_TOKEN if i == eos else spelled(tokenizer.token_bytes(i)) for i in range(n)]
    assert types[:n] == [CONTROL if i == eos else NORMAL for i in range(n)]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, vocab_size)] and set(types[n:]) <= {UNUSED}
    assert keys["tokenizer.ggml.eos_token_id"] == eos
    assert keys["tokenizer.ggml.bos_token_id"] == eos  # no BOS: EOS doubles as it, never added
    assert keys["tokenizer.ggml.add_bos_token"] is False
    assert keys["tokenizer.ggml.add_eos_token"] is False
    # Every merge joins two tokens into a third, in the order of the result's id.
    merges = keys["tokenizer.ggml.merges"]
    ids = {token: i for i, token in enumerate(tokens[:n])}
    results = [ids["".join(merge.split(" "))] for merge in merges]
    assert results == sorted(results) and len(set(results)) == n - 256 - 1
    assert all(left in ids and right in ids for left, right in (m.split(" ") for m in merges))


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    """A tokenizer trained as 'gemma-core tokenizer train' trains one (the same library calls)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    ranks = train_bpe([bundled_works()[0].text[:40_000]], vocab_size=400)
    write_ranks(ranks, folder / "small.tiktoken")
    return from_ranks_file(folder / "small.tiktoken")


@pytest.mark.parametrize("name, vocab_size, pre", [
    ("shakespeare-4k", SHAKESPEARE_VOCAB, "llama-bpe"),
    ("trained", 416, "llama-bpe"),  # a vocabulary padded past the tokenizer's 400 ids
    ("gpt2", 50_304, "gpt-2"),
])
def test_our_tokenizers_are_written_as_byte_level_bpe(tmp_path, name, vocab_size, pre, trained_tokenizer):
    tokenizer = trained_tokenizer if name == "trained" else load_tokenizer(name)
    checkpoint(tmp_path / "ours", tokenizer, vocab_size=vocab_size, tie_embeddings=True)
    export_gguf(tmp_path / "ours", tmp_path / "model.gguf")
    keys, tensors = read_back(tmp_path / "model.gguf")
    assert_byte_level_vocab(keys, tokenizer, vocab_size, pre)
    assert tensors["token_embd.weight"][1].shape == (vocab_size, 64)


def gemma_like_checkpoint(root: Path) -> None:
    from test_hf_interop import _gemma_like_checkpoint

    _gemma_like_checkpoint(root / "hf", template=True,
                           tokenizer_config={"add_bos_token": True, "bos_token": "<bos>", "eos_token": "<eos>"})
    import_hf(root / "hf", root / "ours")


def test_a_gemma_style_tokenizer_is_written_as_sentencepiece_with_its_bos(tmp_path):
    pytest.importorskip("transformers")
    gemma_like_checkpoint(tmp_path)
    export_gguf(tmp_path / "ours", tmp_path / "model.gguf")
    keys, _ = read_back(tmp_path / "model.gguf")
    _, tokenizer, _ = load_model_dir(tmp_path / "ours")
    assert keys["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.pre" not in keys
    tokens, types, scores = (keys[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "scores"))
    assert len(tokens) == len(types) == len(scores) == 273
    assert tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert types[:4] == [CONTROL, CONTROL, CONTROL, UNKNOWN]
    assert tokens[4:260] == [f"<0x{b:02X}>" for b in range(256)] and set(types[4:260]) == {BYTE}
    assert tokens[260:] == ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁w", "hell", "hello"]
    # SentencePiece merges by score: each merge's result scores minus its rank.
    assert [scores[tokens.index(t)] for t in ("he", "ll", "▁w", "hell", "hello")] == [0, -1, -2, -3, -4]
    assert max(scores[:268]) < -4
    assert keys["tokenizer.ggml.eos_token_id"] == tokenizer.eos_id == 1
    assert keys["tokenizer.ggml.bos_token_id"] == tokenizer.bos_id == 2
    assert keys["tokenizer.ggml.add_bos_token"] is True
    assert keys["tokenizer.ggml.unknown_token_id"] == 3
    assert keys["tokenizer.ggml.add_space_prefix"] is False


# ------------------------------------------------------------------- refusals
def test_export_gguf_writes_through_the_command_line(tmp_path, capsys, shakespeare):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    code = main(["export-gguf", "--checkpoint", str(tmp_path / "ours"), "--output", str(tmp_path / "m.gguf"),
                 "--type", "q8_0"])
    assert code == 0 and "llama" in capsys.readouterr().out
    assert read_back(tmp_path / "m.gguf")[0]["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0


def custom_pattern_checkpoint(root: Path, shakespeare) -> None:
    import json

    checkpoint(root, shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    write_ranks(shakespeare.encoding._mergeable_ranks, root / "tokenizer.tiktoken")
    config = json.loads((root / "config.json").read_text())
    config["tokenizer"] = {"kind": "file", "file": "tokenizer.tiktoken", "pattern": r"\S+|\s+"}
    (root / "config.json").write_text(json.dumps(config))


def wordlevel_checkpoint(root: Path, shakespeare) -> None:
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    checkpoint(root, shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "a": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    config = json.loads((root / "config.json").read_text())
    config["tokenizer"] = {"kind": "hf", "file": "tokenizer.json", "eos_id": 0, "bos_id": None}
    (root / "config.json").write_text(json.dumps(config))


def no_qk_norm_checkpoint(root: Path, shakespeare) -> None:
    checkpoint(root, shakespeare, vocab_size=SHAKESPEARE_VOCAB, qk_norm=False)


@pytest.mark.parametrize("make, expected", [
    (None, "checkpoint directory not found"),
    (no_qk_norm_checkpoint, "'qk_norm' is false"),
    (custom_pattern_checkpoint, "pattern llama.cpp does not know"),
    (wordlevel_checkpoint, "cannot be written to GGUF"),
])
def test_a_model_llama_cpp_cannot_run_is_refused_in_one_line(tmp_path, capsys, shakespeare, make, expected):
    if make is not None:
        make(tmp_path / "ours", shakespeare)
    code, err = run(["export-gguf", "--checkpoint", str(tmp_path / "ours"),
                     "--output", str(tmp_path / "m.gguf")], capsys)
    assert_one_line_refusal(code, err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ours"] if make else [])


@pytest.mark.parametrize("output, expected", [
    ("missing-folder/m.gguf", "does not exist; create it first"),
    ("existing.gguf", "exists; pass --overwrite"),
    ("a-folder", "is a folder"),
    ("/proc/gemma-export-test.gguf", "cannot write in /proc"),
])
def test_a_bad_output_is_refused_before_anything_is_written(tmp_path, capsys, shakespeare, output, expected):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    (tmp_path / "existing.gguf").write_bytes(b"keep me")
    (tmp_path / "a-folder").mkdir()
    target = output if output.startswith("/") else str(tmp_path / output)
    code, err = run(["export-gguf", "--checkpoint", str(tmp_path / "ours"), "--output", target], capsys)
    assert_one_line_refusal(code, err, expected)
    assert (tmp_path / "existing.gguf").read_bytes() == b"keep me"
    assert not list(tmp_path.glob(".*"))


def test_overwrite_replaces_an_existing_file(tmp_path, capsys, shakespeare):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    (tmp_path / "m.gguf").write_bytes(b"old")
    assert main(["export-gguf", "--checkpoint", str(tmp_path / "ours"), "--output", str(tmp_path / "m.gguf"),
                 "--overwrite"]) == 0
    assert read_back(tmp_path / "m.gguf")[0]["general.architecture"] == "gemma3"


def test_a_failed_write_leaves_the_previous_file_and_no_half_written_one(tmp_path, capsys, monkeypatch,
                                                                         shakespeare):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    (tmp_path / "m.gguf").write_bytes(b"old")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    code, err = run(["export-gguf", "--checkpoint", str(tmp_path / "ours"), "--output", str(tmp_path / "m.gguf"),
                     "--overwrite"], capsys)
    assert_one_line_refusal(code, err, "disk full")
    assert (tmp_path / "m.gguf").read_bytes() == b"old"
    assert not list(tmp_path.glob(".*"))


def test_without_the_gguf_package_the_error_names_the_extra(tmp_path, capsys, monkeypatch, shakespeare):
    checkpoint(tmp_path / "ours", shakespeare, vocab_size=SHAKESPEARE_VOCAB)
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    code, err = run(["export-gguf", "--checkpoint", str(tmp_path / "ours"),
                     "--output", str(tmp_path / "m.gguf")], capsys)
    assert_one_line_refusal(code, err, "pip install 'gemma-studio[gguf]'")
    assert not (tmp_path / "m.gguf").exists()


def test_an_unknown_type_is_refused_by_name():
    with pytest.raises(gguf_export.UserError, match="--type 'q4_0'"):
        export_gguf("unused", "unused.gguf", tensor_type="q4_0")


# ------------------------------------------------------------- llama.cpp itself
def passage() -> str:
    return bundled_works()[0].text[5000:5800]


def prompts() -> list[str]:
    """Openings from the passage the model learnt, and one it did not see (with EOS as text)."""
    text = passage()
    return [text[:30], text[100:140], text[300:320], text[500:530], "Enter HAMLET <|endoftext|> and"]


@pytest.fixture(scope="module")
def trained_nano(tmp_path_factory, shakespeare):
    """The nano preset trained for a few seconds on one passage, so its predictions are
    confident: random weights give near-ties, where greedy decoding depends on rounding."""
    torch.manual_seed(0)
    model = Gemma3Model(preset("nano"))
    ids = torch.tensor(shakespeare.encode(passage() * 40))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        starts = torch.randint(0, len(ids) - 65, (8,))
        batch = torch.stack([ids[s:s + 65] for s in starts])
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("nano") / "ckpt"
    save_model_dir(folder, model.eval(), shakespeare)
    export_gguf(folder, folder.parent / "nano.gguf")
    return folder, folder.parent / "nano.gguf"


def llama(path: Path, n_ctx: int = 256):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=False, verbose=False)


def test_llama_cpp_decodes_greedily_as_we_do_in_fp32(trained_nano):
    llama_cpp = pytest.importorskip("llama_cpp")
    folder, path = trained_nano
    model, tokenizer, _ = load_model_dir(folder)
    llm = llama(path)
    said = set()
    try:
        for prompt in prompts():
            ids = tokenizer.encode(prompt)
            assert llm.tokenize(prompt.encode(), add_bos=False, special=False) == ids, prompt
            # 40 new tokens: well past the nano preset's 16-token window.
            ours = list(generate_tokens(model, ids, SamplingParams(max_new_tokens=40, temperature=0,
                                                                    stop_at_eos=False)))
            theirs = []
            for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
                theirs.append(token)
                if len(theirs) == len(ours):
                    break
            assert theirs == ours, prompt
            said.update(ours)
            # And the next-token logits themselves, at the end of prompt + continuation.
            llm.reset()
            llm.eval(ids + ours[:-1])
            with torch.no_grad():
                want = model(torch.tensor([ids + ours[:-1]]))[0, -1].numpy()
            theirs = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))
            np.testing.assert_allclose(theirs, want, atol=1e-3 * np.abs(want).max())
    finally:
        llm.close()
    assert len(said) > 5, "a trained model says various things; near-ties would make this test luck"


def test_llama_cpp_tokenizes_and_computes_as_we_do_with_every_tokenizer_kind(tmp_path, trained_tokenizer,
                                                                          shakespeare):
    """GPT-2's, the shipped and a freshly trained BPE, and a Gemma-style SentencePiece, in
    tiny models whose query_pre_attn_scalar (24) is not their head size (32)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    texts = [PROBE_TEXT, "a\tb  c\t\td <|endoftext|>", "trailing   ", "x \n\n y", "  \t\n", "hello world é <eos>"]
    folders = {}
    for name, tokenizer, vocab_size in [("gpt2", load_tokenizer("gpt2"), 50_257),
                                        ("shakespeare-4k", shakespeare, SHAKESPEARE_VOCAB),
                                        ("trained", trained_tokenizer, 400)]:
        checkpoint(tmp_path / name, tokenizer, vocab_size=vocab_size, tie_embeddings=name != "shakespeare-4k")
        folders[name] = tmp_path / name
    gemma_like_checkpoint(tmp_path / "gemma")
    folders["gemma"] = tmp_path / "gemma" / "ours"
    for name, folder in folders.items():
        export_gguf(folder, tmp_path / f"{name}.gguf")
        model, tokenizer, _ = load_model_dir(folder)
        llm = llama(tmp_path / f"{name}.gguf", n_ctx=128)
        try:
            for text in texts:
                assert llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer.encode(text), \
                    (name, text)
            assert llm.tokenize(b"hello", add_bos=True, special=False) == tokenizer.encode_document("hello"), name
            ids = tokenizer.encode_document(PROBE_TEXT)[:60]  # past the 16-token window
            llm.eval(ids)
            theirs = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))
            with torch.no_grad():
                want = model(torch.tensor([ids]))[0, -1].numpy()
            np.testing.assert_allclose(theirs, want, atol=1e-3 * np.abs(want).max(), err_msg=name)
        finally:
            llm.close()


def test_llama_cpp_runs_the_quantised_file(trained_nano, tmp_path):
    pytest.importorskip("llama_cpp")
    folder, _ = trained_nano
    export_gguf(folder, tmp_path / "q8.gguf", tensor_type="q8_0")
    llm = llama(tmp_path / "q8.gguf")
    try:
        text = llm.create_completion(prompts()[0], max_tokens=8, temperature=0.0)["choices"][0]["text"]
        assert text.strip()
    finally:
        llm.close()
