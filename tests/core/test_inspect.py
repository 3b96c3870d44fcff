"""gemma_core.inspect and `gemma-core inspect`: one forward pass, looked inside.

What a user relies on: the attention maps are real probability distributions that honour
each layer's window; the logit lens ends exactly at the model's own output; the inspected
pass is the model's forward, whichever attention kernel the model trains with; and
`inspect --json` keeps its documented shape.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from gemma_core.cli import main
from gemma_core.errors import UserError
from gemma_core.inspect import MAX_TOKENS, inspect_prompt, inspect_tokens, layer_statistics
from gemma_core.model.attention import available_kernels
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.run.model_dir import save_model_dir
from gemma_core.tokenizers.tokenizer import load_tokenizer
from tests.end_to_end.test_hostile_input import assert_one_line_refusal

TOKENIZER = load_tokenizer("shakespeare-4k")  # 4,096 ids: the nano and demo presets' vocabulary
PROMPT = "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name."
TOO_LONG = "word " * MAX_TOKENS


def randomised(model: Gemma3Model, std: float = 0.1) -> Gemma3Model:
    """Weights far from their initial zeros and near-uniform attention, logits of order ten."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
    return model.eval()


# The shipped presets' real architectures (nano: one sliding layer of window 16 and one full;
# demo: five sliding of window 128 and one full), and a small grouped-query model (two
# key/value heads for four query heads) with a window of 16.
CONFIGS = {"nano": lambda: preset("nano"), "demo": lambda: preset("demo"),
           "grouped": lambda: tiny_config(vocab_size=4096, n_kv_groups=2)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def inspected(request):
    """A randomised model, a prompt 32 tokens longer than its window, and its inspection."""
    torch.manual_seed(1)
    model = randomised(Gemma3Model(CONFIGS[request.param]()))
    length = model.cfg.sliding_window + 32
    ids = torch.randint(0, model.cfg.vocab_size, (length,)).tolist()
    return model, ids, inspect_tokens(model, TOKENIZER, ids, top_k=5)


# ------------------------------------------------------------------ attention
def test_every_attention_row_sums_to_one(inspected):
    _, ids, found = inspected
    for layer in found.layers:
        assert layer.attention.shape == (layer.attention.shape[0], len(ids), len(ids))
        torch.testing.assert_close(layer.attention.sum(-1), torch.ones(layer.attention.shape[:2]),
                                   atol=1e-6, rtol=0)


def test_a_sliding_layer_gives_exactly_zero_weight_beyond_its_window_and_a_full_layer_does_not(inspected):
    model, ids, found = inspected
    query = torch.arange(len(ids))[:, None]
    key = torch.arange(len(ids))[None, :]
    future = key > query
    beyond_window = (query - key) >= model.cfg.sliding_window
    assert beyond_window.any()
    kinds = {layer.type for layer in found.layers}
    assert kinds == {"sliding", "full"}
    for layer in found.layers:
        weights = layer.attention
        assert bool((weights[:, future] == 0).all()), f"layer {layer.index} sees the future"
        if layer.type == "sliding":
            assert layer.window == model.cfg.sliding_window
            assert bool((weights[:, beyond_window] == 0).all()), f"layer {layer.index} looks past its window"
        else:
            assert layer.window is None
            assert bool((weights[:, beyond_window] > 0).all()), f"full layer {layer.index} ignores far keys"
        # Within reach every key gets some weight: the mask hides nothing it should show.
        assert bool((weights[:, ~future & ~beyond_window] > 0).all())


def test_uniform_attention_has_the_entropy_of_its_window_in_nats(inspected):
    """With zero queries every visible key scores alike: row i's entropy is ln(keys it sees)."""
    model, ids, _ = inspected
    flat = copy.deepcopy(model)
    with torch.no_grad():
        for layer in flat.layers:
            layer.attn.q_proj.weight.zero_()
    found = inspect_tokens(flat, TOKENIZER, ids)
    positions = torch.arange(1, len(ids) + 1, dtype=torch.float64)
    for layer in found.layers:
        seen = positions if layer.window is None else positions.clamp(max=layer.window)
        expected = float(seen.log().mean())
        assert layer.entropy.tolist() == pytest.approx([expected] * len(layer.entropy), abs=1e-5)


def test_entropy_is_each_heads_row_entropy_averaged_over_positions(inspected):
    _, _, found = inspected
    for layer in found.layers:
        weights = layer.attention.double()
        rows = -(weights * torch.where(weights > 0, weights.log(), torch.zeros_like(weights))).sum(-1)
        torch.testing.assert_close(layer.entropy.double(), rows.mean(-1), atol=1e-5, rtol=0)


# ------------------------------------------------------ the pass is the model's
@pytest.mark.parametrize("kernel", available_kernels("cpu"))
def test_inspected_logits_equal_the_models_forward_under_each_kernel(inspected, kernel):
    model, ids, found = inspected
    model.set_attention_kernel(kernel)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0]
    finally:
        model.set_attention_kernel("sdpa")
    torch.testing.assert_close(found.logits, logits, atol=1e-5, rtol=1e-5)


def test_results_agree_whichever_attention_kernel_the_model_trains_with(inspected):
    model, ids, _ = inspected
    runs = {}
    for kernel in ("sdpa", "eager"):
        twin = copy.deepcopy(model)
        assert twin.set_attention_kernel(kernel) == kernel
        runs[kernel] = inspect_tokens(twin, TOKENIZER, ids)
    sdpa, eager = runs["sdpa"], runs["eager"]
    assert torch.equal(sdpa.logits, eager.logits)
    for a, b in zip(sdpa.layers, eager.layers):
        assert torch.equal(a.attention, b.attention) and torch.equal(a.entropy, b.entropy)
        assert a.residual_rms == b.residual_rms and a.lens == b.lens
    assert sdpa.next == eager.next and sdpa.surprisal == eager.surprisal


@pytest.mark.skipif(not torch.cuda.is_available() or "flex" not in available_kernels("cuda"),
                    reason="FlexAttention runs on CUDA only")
def test_inspected_logits_equal_the_models_forward_with_flex_attention_on_cuda():
    torch.manual_seed(1)
    model = randomised(Gemma3Model(preset("nano"))).cuda()
    ids = torch.randint(0, model.cfg.vocab_size, (64,)).tolist()
    found = inspect_tokens(model, TOKENIZER, ids)
    model.set_attention_kernel("flex")
    with torch.no_grad():
        logits = model(torch.tensor([ids], device="cuda"))[0].cpu()
    torch.testing.assert_close(found.logits, logits, atol=1e-4, rtol=1e-4)


def test_the_lens_at_the_last_layer_is_the_models_own_output_distribution(inspected):
    model, ids, found = inspected
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]))[0].float(), dim=-1)
    top_probs, top_ids = probs.topk(5, dim=-1)
    lens = found.layers[-1].lens
    assert [[p.token_id for p in position] for position in lens] == top_ids.tolist()
    torch.testing.assert_close(torch.tensor([[p.prob for p in position] for position in lens]), top_probs,
                               atol=1e-6, rtol=1e-5)
    assert found.next == lens[-1]
    # The earlier layers' lenses are their own: a lens that ignored the layer would repeat the last.
    assert any(layer.lens != lens for layer in found.layers[:-1])


def test_the_lens_is_most_likely_first_and_names_each_token_by_its_text(inspected):
    _, _, found = inspected
    for layer in found.layers:
        for position in layer.lens:
            assert len(position) == 5
            assert [p.prob for p in position] == sorted((p.prob for p in position), reverse=True)
            assert all(p.token == TOKENIZER.token_bytes(p.token_id).decode("utf-8", "replace")
                       for p in position)


def test_residual_rms_is_the_root_mean_square_of_the_stream_after_each_block(inspected):
    model, ids, found = inspected
    with torch.no_grad():
        last = model.hidden_states(torch.tensor([ids]))[0]
    assert found.layers[-1].residual_rms == pytest.approx(float(last.pow(2).mean(-1).sqrt().mean()), rel=1e-5)
    assert all(layer.residual_rms > 0 for layer in found.layers)


def test_surprisal_is_the_models_cross_entropy_per_token_in_bits(inspected):
    model, ids, found = inspected
    tokens = torch.tensor([ids])
    with torch.no_grad():
        nats = F.cross_entropy(model(tokens)[0, :-1], tokens[0, 1:], reduction="none")
    assert found.surprisal[0] is None and len(found.surprisal) == len(ids)
    assert found.surprisal[1:] == pytest.approx((nats / math.log(2)).tolist(), rel=1e-4, abs=1e-4)


def test_layer_statistics_are_the_inspections_entropy_and_residual_rms(inspected):
    model, ids, found = inspected
    rows = layer_statistics(model, ids)
    assert [(r["index"], r["type"]) for r in rows] == [(layer.index, layer.type) for layer in found.layers]
    for row, layer in zip(rows, found.layers):
        assert row["entropy_mean"] == pytest.approx(float(layer.entropy.mean()), abs=1e-6)
        assert row["residual_rms"] == pytest.approx(layer.residual_rms, rel=1e-6)


def test_inspecting_changes_nothing_in_the_model(inspected):
    model, ids, _ = inspected
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    inspect_tokens(model, TOKENIZER, ids)
    layer_statistics(model, ids)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


class WithBos:
    """A tokenizer that puts a BOS first, as an imported Gemma tokenizer does."""

    BOS = 2

    def encode_document(self, text: str) -> list[int]:
        return [self.BOS, *TOKENIZER.encode(text)]

    def token_bytes(self, token_id: int) -> bytes:
        return b"<bos>" if token_id == self.BOS else TOKENIZER.token_bytes(token_id)


def test_a_tokenizer_that_adds_bos_shows_it_as_the_first_token():
    model = randomised(Gemma3Model(tiny_config(vocab_size=4096)))
    found = inspect_prompt(model, WithBos(), "ROMEO:")
    assert found.token_ids[0] == WithBos.BOS and found.tokens[0] == "<bos>"
    assert found.tokens[1:] == [TOKENIZER.token_bytes(t).decode() for t in TOKENIZER.encode("ROMEO:")]


def test_ids_the_tokenizer_lacks_are_named_by_their_number():
    """A model vocabulary larger than its tokenizer's (gemma-3-270m from scratch on GPT-2 ids)."""
    torch.manual_seed(3)
    model = randomised(Gemma3Model(tiny_config(vocab_size=4400)))
    found = inspect_prompt(model, TOKENIZER, PROMPT, top_k=50)
    candidates = [p for layer in found.layers for position in layer.lens for p in position] + found.next
    unknown = [p for p in candidates if p.token_id >= TOKENIZER.n_vocab]
    assert unknown and all(p.token == f"<id {p.token_id}>" for p in unknown)
    assert all(not p.token.startswith("<id ") for p in candidates if p.token_id < TOKENIZER.n_vocab)


# ------------------------------------------------------------------- refusals
@pytest.mark.parametrize("prompt, expected", [
    ("", "the prompt is empty"),
    ("word " * (MAX_TOKENS + 10), f"at most {MAX_TOKENS}"),
])
def test_a_prompt_that_cannot_be_inspected_is_refused_by_the_library(prompt, expected):
    model = Gemma3Model(tiny_config(vocab_size=4096, context_length=1024)).eval()
    with pytest.raises(UserError, match=expected):
        inspect_prompt(model, TOKENIZER, prompt)


def test_a_prompt_longer_than_the_models_context_names_the_context():
    model = Gemma3Model(preset("nano")).eval()  # a context of 256 tokens
    with pytest.raises(UserError, match="context is 256 tokens.*at most 256"):
        inspect_prompt(model, TOKENIZER, "word " * 300)


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A model folder, as export or a run writes it, with a checkpoint state at step 7."""
    folder = tmp_path_factory.mktemp("inspect") / "model"
    torch.manual_seed(2)
    model = Gemma3Model(tiny_config(vocab_size=4096, context_length=1024))  # context past MAX_TOKENS
    save_model_dir(folder, randomised(model), TOKENIZER)
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.json").write_text(json.dumps({
        "step": 7, "tokens_seen": 0, "data": {"epoch": 0, "position": 0}, "rng": {"torch": [], "python": []},
        "model": {}, "tokenizer": {}, "settings": {}}))
    return folder




def inspect_json(checkpoint, capsys, *extra: str) -> dict:
    assert main(["inspect", "--checkpoint", str(checkpoint), "--prompt", PROMPT, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def is_prediction_list(entries, k: int) -> bool:
    return (isinstance(entries, list) and len(entries) == k
            and all(set(e) == {"token", "prob"} and isinstance(e["token"], str)
                    and isinstance(e["prob"], float) and 0 <= e["prob"] <= 1 for e in entries)
            and [e["prob"] for e in entries] == sorted((e["prob"] for e in entries), reverse=True))


def test_inspect_json_has_the_documented_shape(checkpoint, capsys):
    found = inspect_json(checkpoint, capsys, "--top_k", "3")
    cfg = tiny_config()
    tokens = TOKENIZER.encode_document(PROMPT)
    n = len(tokens)
    assert set(found) == {"step", "tokens", "layers", "next", "surprisal"}
    assert found["step"] == 7
    assert found["tokens"] == [TOKENIZER.token_bytes(t).decode("utf-8", "replace") for t in tokens]
    assert [layer["index"] for layer in found["layers"]] == list(range(cfg.n_layers))
    for layer, kind in zip(found["layers"], cfg.layer_types):
        assert set(layer) == {"index", "type", "window", "attention", "entropy", "residual_rms", "lens"}
        sliding = kind == "sliding_attention"
        assert layer["type"] == ("sliding" if sliding else "full")
        assert layer["window"] == (cfg.sliding_window if sliding else None)
        attention = layer["attention"]
        assert len(attention) == cfg.n_heads and all(len(head) == n for head in attention)
        assert all(len(row) == n and abs(sum(row) - 1) < 1e-4 for head in attention for row in head)
        assert len(layer["entropy"]) == cfg.n_heads and all(e >= 0 for e in layer["entropy"])
        assert isinstance(layer["residual_rms"], float) and layer["residual_rms"] > 0
        assert len(layer["lens"]) == n and all(is_prediction_list(p, 3) for p in layer["lens"])
    assert is_prediction_list(found["next"], 3)
    assert found["next"] == found["layers"][-1]["lens"][-1]
    assert len(found["surprisal"]) == n and found["surprisal"][0] is None
    assert all(isinstance(bits, float) and bits >= 0 for bits in found["surprisal"][1:])


def test_a_model_folder_without_a_checkpoint_reports_step_zero(checkpoint, tmp_path, capsys):
    exported = tmp_path / "exported"
    exported.mkdir()
    for name in ("config.json", "model.safetensors"):
        (exported / name).write_bytes((checkpoint / name).read_bytes())
    found = inspect_json(exported, capsys, "--top_k", "1")
    assert found["step"] == 0 and len(found["next"]) == 1


def test_the_readable_summary_names_every_layer_and_every_prompt_token(checkpoint, capsys):
    assert main(["inspect", "--checkpoint", str(checkpoint), "--prompt", PROMPT]) == 0
    out = capsys.readouterr().out
    rows = [[cell for cell in line.split() if cell != "│"] for line in out.splitlines()]
    for index, kind in enumerate(tiny_config().layer_types):
        kind = "sliding" if kind == "sliding_attention" else "full"
        assert [str(index), kind] in (row[:2] for row in rows), out
    assert "step 7" in out and "next token (top 5)" in out
    assert "'?\\n'" in out  # the prompt's newline is shown escaped, never printed raw
    assert "' Romeo'" in out


@pytest.mark.parametrize("argv, expected", [
    (["--checkpoint", "{missing}", "--prompt", "hi"], "checkpoint directory not found"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", TOO_LONG], (f"--prompt is {len(TOKENIZER.encode_document(TOO_LONG)):,} tokens; inspect "
                              f"shows at most {MAX_TOKENS}")),
    (["--prompt", "hi", "--top_k", "0"], "--top_k must be from 1 to 50"),
    (["--prompt", "hi", "--top_k", "51"], "--top_k must be from 1 to 50"),
    (["--prompt", "hi", "--top_k", "five"], "--top_k"),
    (["--prompt", "hi", "--device", "tpu"], "--device"),
])
def test_bad_input_is_refused_in_one_line(checkpoint, tmp_path, capsys, argv, expected):
    argv = [a.replace("{missing}", str(tmp_path / "missing")) for a in argv]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(checkpoint), *argv]
    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    assert_one_line_refusal(code, captured.err, expected)
    assert captured.out == ""
