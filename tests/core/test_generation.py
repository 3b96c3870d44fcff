"""Generation: sampling rules, EOS and stop strings, streaming, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

from gemma_core.model.generation import SamplingParams, Utf8Stream, generate_tokens, sample_next, stream_text
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.run.model_dir import load_model_dir, save_model_dir
from gemma_core.tokenizers.tokenizer import load_tokenizer
from tests.end_to_end.cli_in_process import run_cli


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(1)
    model = Gemma3Model(preset("nano")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model, load_tokenizer("shakespeare-4k")


def test_greedy_decoding_follows_the_argmax_of_a_full_forward(nano):
    model, tok = nano
    prompt = tok.encode("ROMEO: But soft, what light")
    new = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=40, temperature=0,
                                                             stop_at_eos=False)))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(40):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert new == ids[len(prompt):]


def test_same_seed_same_text_and_top_k_1_is_greedy(nano):
    model, tok = nano
    prompt = tok.encode("KING:")
    sampled = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=7,
                             stop_at_eos=False)
    assert list(generate_tokens(model, prompt, sampled)) == list(generate_tokens(model, prompt, sampled))
    top1 = SamplingParams(max_new_tokens=20, temperature=1.3, top_k=1, seed=3, stop_at_eos=False)
    greedy = SamplingParams(max_new_tokens=20, temperature=0, stop_at_eos=False)
    assert list(generate_tokens(model, prompt, top1)) == list(generate_tokens(model, prompt, greedy))


def test_compiled_decoding_gives_the_same_tokens_as_eager(nano):
    """generate --compile: a torch.compile'd step over a static cache, far past the window."""
    model, tok = nano
    prompt = tok.encode("ROMEO: But soft, what light")
    for params in (SamplingParams(max_new_tokens=60, temperature=0, stop_at_eos=False),
                   SamplingParams(max_new_tokens=60, temperature=1.0, top_k=40, seed=5, stop_at_eos=False)):
        eager = list(generate_tokens(model, prompt, params))
        assert list(generate_tokens(model, prompt, params, compiled=True)) == eager
    # A prompt of another length reuses the compiled step (same capacity class).
    shorter = prompt[:3]
    greedy = SamplingParams(max_new_tokens=60, temperature=0, stop_at_eos=False)
    assert list(generate_tokens(model, shorter, greedy, compiled=True)) == list(
        generate_tokens(model, shorter, greedy))


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = SamplingParams(temperature=1.0, top_p=0.75)
    generator = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, params, generator)) for _ in range(300)}
    assert seen == {0, 1}


def test_generation_stops_at_eos_without_yielding_it(nano):
    model, tok = nano
    prompt = tok.encode("A")
    free = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=30, temperature=0,
                                                              stop_at_eos=False)))
    eos = free[7]  # pretend the 8th greedy token is the end-of-text token
    stopped = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=30, temperature=0),
                                   eos_id=eos))
    assert stopped == free[:free.index(eos)]


def test_stop_string_ends_the_stream_before_it(nano):
    model, tok = nano
    free = "".join(stream_text(model, tok, "Hamlet", SamplingParams(max_new_tokens=60, temperature=0,
                                                                       stop_at_eos=False)))
    stop = free[10:13]
    cut = "".join(stream_text(model, tok, "Hamlet", SamplingParams(max_new_tokens=60, temperature=0,
                                                                      stop_at_eos=False,
                                                                      stop_strings=(stop,))))
    assert cut == free[:free.find(stop)]


def test_multibyte_characters_are_never_split():
    tok = load_tokenizer("gpt2")
    stream = Utf8Stream(tok)
    pieces = [stream.push(t) for t in tok.encode("☕ and 日本語")] + [stream.flush()]
    assert "".join(pieces) == "☕ and 日本語"
    assert all("\ufffd" not in piece for piece in pieces)


def test_checkpoint_round_trip_and_generate_command(tmp_path, nano):
    model, tok = nano
    save_model_dir(tmp_path / "run", model, tok)
    loaded, loaded_tok, data = load_model_dir(tmp_path / "run")
    assert data["tokenizer"]["name"] == "shakespeare-4k"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    expected = "".join(stream_text(model, tok, "Good morrow", SamplingParams(max_new_tokens=12, temperature=0)))
    result = run_cli("generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "Good morrow",
                     "--max_new_tokens", "12", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Good morrow")
    assert result.stdout == "Good morrow" + expected + "\n"
    compiled = subprocess.run(
        [sys.executable, "-m", "gemma_core", "generate", "--checkpoint", str(tmp_path / "run"),
         "--prompt", "Good morrow", "--max_new_tokens", "12", "--temperature", "0", "--compile"],
        capture_output=True, text=True, timeout=300)
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stdout == result.stdout


def test_generate_on_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    result = run_cli("generate", "--checkpoint", str(tmp_path / "nope"), "--prompt", "x")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "checkpoint directory not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_when_the_compiler_fails_decoding_goes_on_uncompiled(monkeypatch):
    from gemma_core.model import generation

    torch.manual_seed(0)
    model = Gemma3Model(tiny_config()).eval()
    params = SamplingParams(max_new_tokens=8, temperature=0, stop_at_eos=False)
    eager = list(generate_tokens(model, [1, 2, 3], params))

    def compiler_that_fails():
        def step(*args):
            raise RuntimeError("no C++ compiler (an unwritable TMPDIR, say)")
        return step

    monkeypatch.setattr(generation, "_compiled_decode_step", compiler_that_fails)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert list(generate_tokens(model, [1, 2, 3], params, compiled=True)) == eager
