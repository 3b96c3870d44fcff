"""The shipped tokenizers work offline and are exactly what they claim to be."""

from __future__ import annotations

import pytest

from gemma_core.errors import UserError
from gemma_core.tokenizers.tokenizer import from_ranks_file, load_tokenizer, read_ranks, write_ranks


def test_gpt2_is_gpt2_exactly_and_offline():
    tok = load_tokenizer("gpt2")
    assert tok.n_vocab == 50_257
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eos_id == 50_256
    assert tok.encoding.encode("<|endoftext|>", allowed_special="all") == [50_256]
    # GPT-2 ids of a longer sentence (checked against GPT-2's published encoder).
    assert tok.encode("The quick brown fox jumps over the lazy dog.") == [
        464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
    assert tok.decode(tok.encode("naïve café ☕")) == "naïve café ☕"


def test_text_that_looks_like_a_special_token_stays_text():
    tok = load_tokenizer("gpt2")
    assert 50_256 not in tok.encode("a <|endoftext|> b")


def test_demo_tokenizer_is_shipped_and_sized_for_the_demo_model():
    tok = load_tokenizer("shakespeare-4k")
    assert tok.n_vocab == 4096 and tok.eos_id == 4095
    text = "To be, or not to be, that is the question:"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < len(text) / 2


def test_ranks_file_round_trip(tmp_path):
    gpt2 = load_tokenizer("gpt2")
    ranks = {gpt2.token_bytes(i): i for i in range(300)}
    path = tmp_path / "small.tiktoken"
    write_ranks(ranks, path)
    assert read_ranks(path) == ranks
    tok = from_ranks_file(path)
    assert tok.n_vocab == 301 and tok.eos_id == 300


def test_a_file_that_is_not_a_ranks_file_names_its_line(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_text("SGVsbG8= 0\nthis is not a ranks line\n")
    with pytest.raises(UserError, match=r"bad.tiktoken:2: not a tiktoken ranks line"):
        read_ranks(path)


def test_unknown_encoding_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown tokenizer"):
        load_tokenizer("no-such-encoding")
