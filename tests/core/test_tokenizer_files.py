"""A run's tokenizer loads anywhere: every run folder, checkpoint and model directory holds it
as tokenizer.json (+ tokenizer_config.json) and as tiktoken's ranks (+ their parameters), and
each loads in the real third-party package with our ids. Literal "<|endoftext|>" text is
ordinary text in every form; only the id ends a document."""

from __future__ import annotations

import gzip
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import tiktoken
import tiktoken.load
import tokenizers
import torch
from conftest import tiny_config

from gemma_core.hf.exporter import export_hf
from gemma_core.hf.importer import import_hf
from gemma_core.model.model import Gemma3Model
from gemma_core.run import layout
from gemma_core.run.model_dir import load_model_dir, save_model_dir, write_config
from gemma_core.tokenizers.hf_json import (
    build_hf_tokenizer,
    hf_tokenizer_from_spec,
    ranks_from_tokenizer_json,
)
from gemma_core.tokenizers.tokenizer import EOS_TOKEN, from_ranks_file, load_tokenizer, train_bpe, write_ranks
from gemma_core.tokenizers.tokenizer_files import TOKENIZER_FILES
from gemma_core.train.engine import TrainingEngine
from gemma_core.train.settings import TrainSettings

transformers = pytest.importorskip("transformers")

MIXED = ("KING <|endoftext|>Richard: 'tis 1234567 crowns,  naïve café — 東京 😀 ∑x²\n\n\n"
         "   indented\tline\r\n<|endoftext|><|endoftext|> the end<|endoftext|>\n  ")
LITERAL_EOS_TEXTS = ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|>\n<|endoftext|><|endoftext|>",
                     "<|endoftext|> KING", "<|endoftext", "endoftext|>", "<|ENDOFTEXT|>"]


@pytest.fixture(autouse=True)
def _tiktoken_cache_apart(tmp_path, monkeypatch):
    """tiktoken caches files it loads by path; each test keeps its own cache."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))


@pytest.fixture(scope="module")
def nano_run(tmp_path_factory, corpus):
    """A real nano run (shakespeare-4k) of two steps with a checkpoint."""
    train, val = corpus
    root = tmp_path_factory.mktemp("nano")
    settings = TrainSettings.for_preset(
        "nano", output_dir=str(root / "run"), train_dataset_path=str(train), val_dataset_path=str(val),
        cache_dir=str(root / "cache"), device="cpu", dtype="fp32", max_steps=2, eval_iters=2,
        save_steps=2, seed=3)
    TrainingEngine(settings).run()
    return root / "run"


@pytest.fixture(scope="module")
def ranks_file(tmp_path_factory, corpus):
    """A ranks file such as 'gemma-core tokenizer train' writes, gzip-compressed (ours reads that,
    tiktoken does not: the run must still give tiktoken a plain one)."""
    train, _ = corpus
    texts = [json.loads(line)["text"] for line in train.read_text(encoding="utf-8").splitlines()]
    path = tmp_path_factory.mktemp("ranks") / "mine.tiktoken"
    write_ranks(train_bpe(texts, vocab_size=400), path)
    gz = path.with_suffix(".tiktoken.gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    return gz


def tiktoken_from(folder):
    """What the README tells a tiktoken user to write."""
    params = json.loads((folder / "tokenizer.tiktoken.json").read_text(encoding="utf-8"))
    ranks = tiktoken.load.load_tiktoken_bpe(str(folder / params["mergeable_ranks_file"]),
                                           expected_hash=params["mergeable_ranks_sha256"])
    return tiktoken.Encoding(params["name"], pat_str=params["pat_str"], mergeable_ranks=ranks,
                             special_tokens=params["special_tokens"])


def auto_tokenizer(folder):
    """As lm-evaluation-harness's HF model loads it."""
    return transformers.AutoTokenizer.from_pretrained(str(folder), revision="main", trust_remote_code=False,
                                                      use_fast=True)


def model_dir_with(tokenizer, folder):
    """config.json and the tokenizer's files, as every run and model directory gets them."""
    folder.mkdir(exist_ok=True)
    write_config(folder, tiny_config(vocab_size=tokenizer.n_vocab), tokenizer)
    return folder


def assert_loads_everywhere_with_our_ids(folder, tokenizer, text=MIXED):
    ours = tokenizer.encode(text)
    assert tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids == ours
    auto = auto_tokenizer(folder)
    assert auto(text)["input_ids"] == ours
    assert auto.encode(text, add_special_tokens=False) == ours
    assert auto.decode(ours) == text
    encoding = tiktoken_from(folder)
    assert encoding.encode_ordinary(text) == ours
    assert encoding.encode(text, disallowed_special=()) == ours
    assert encoding.decode(ours) == text


# --------------------------------------------------------------- every kind
def test_a_run_folder_tokenizer_loads_in_tokenizers_tiktoken_and_autotokenizer_with_our_ids(nano_run):
    tokenizer = load_model_dir(nano_run)[1]
    for name in (*TOKENIZER_FILES, layout.VOCAB):  # the seed's vocab.json is kept
        assert (nano_run / name).is_file(), name
    assert_loads_everywhere_with_our_ids(nano_run, tokenizer)


def test_every_checkpoint_holds_the_run_tokenizer_files_too(nano_run):
    checkpoint = nano_run / layout.CHECKPOINT
    assert (checkpoint / layout.STATE).is_file()
    for name in TOKENIZER_FILES:
        assert (checkpoint / name).read_bytes() == (nano_run / name).read_bytes(), name
    assert_loads_everywhere_with_our_ids(checkpoint, load_model_dir(nano_run)[1])


@pytest.mark.parametrize("kind", ["gpt2", "shakespeare-4k", "ranks file"])
def test_every_kind_of_tokenizer_is_written_in_every_format_with_our_ids(kind, ranks_file, tmp_path):
    tokenizer = from_ranks_file(ranks_file) if kind == "ranks file" else load_tokenizer(kind)
    folder = model_dir_with(tokenizer, tmp_path / "model")
    assert_loads_everywhere_with_our_ids(folder, tokenizer)
    params = json.loads((folder / "tokenizer.tiktoken.json").read_text())
    assert params["pat_str"] == tokenizer.pattern and params["special_tokens"] == {EOS_TOKEN: tokenizer.eos_id}
    rebuilt = tiktoken_from(folder)
    assert rebuilt._mergeable_ranks == tokenizer.encoding._mergeable_ranks
    assert rebuilt.n_vocab == tokenizer.n_vocab and rebuilt.eot_token == tokenizer.eos_id


def test_the_model_still_loads_its_tokenizer_as_before_from_the_files_it_always_read(ranks_file, tmp_path):
    tokenizer = from_ranks_file(ranks_file)
    folder = model_dir_with(tokenizer, tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["tokenizer"]["kind"] == "file"
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.tiktoken.json"):
        (folder / name).unlink()  # a folder written before these files existed
    from gemma_core.run.model_dir import load_tokenizer_of, read_config

    cfg, data = read_config(folder)
    assert load_tokenizer_of(folder, data, cfg).encode(MIXED) == tokenizer.encode(MIXED)


# ------------------------------------------------------------ <|endoftext|>
def test_literal_endoftext_text_is_ordinary_text_in_every_form(tmp_path):
    tokenizer = load_tokenizer("shakespeare-4k")
    torch.manual_seed(0)
    save_model_dir(tmp_path / "ours", Gemma3Model(tiny_config(vocab_size=tokenizer.n_vocab)), tokenizer)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    eos = tokenizer.eos_id
    for folder in (tmp_path / "ours", tmp_path / "hf"):
        hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        auto = auto_tokenizer(folder)
        encoding = tiktoken_from(folder)
        for text in LITERAL_EOS_TEXTS:
            ours = tokenizer.encode(text)
            assert eos not in ours and tokenizer.encode_document(text) == ours
            assert hf.encode(text).ids == hf.encode(text, add_special_tokens=False).ids == ours
            assert auto(text)["input_ids"] == auto(text, add_special_tokens=False)["input_ids"] == ours
            assert auto([text, "x"], padding="longest")["input_ids"][0][:len(ours)] == ours
            assert encoding.encode_ordinary(text) == ours
            if EOS_TOKEN in text:  # tiktoken never silently reads it as the token: it refuses
                with pytest.raises(ValueError, match="disallowed special token"):
                    encoding.encode(text)


def test_the_end_of_text_id_is_the_eos_and_decodes_to_its_text_in_every_form(tmp_path):
    tokenizer = load_tokenizer("gpt2")
    folder = model_dir_with(tokenizer, tmp_path / "model")
    eos = tokenizer.eos_id
    ids = [*tokenizer.encode("one"), eos, *tokenizer.encode("two")]
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert hf.token_to_id(EOS_TOKEN) == eos and hf.id_to_token(eos) == EOS_TOKEN
    assert hf.decode(ids) == tokenizer.decode(ids) == "one<|endoftext|>two"
    auto = auto_tokenizer(folder)
    assert (auto.eos_token, auto.eos_token_id, auto.pad_token_id) == (EOS_TOKEN, eos, eos)
    assert auto.decode(ids) == "one<|endoftext|>two" and auto.decode(ids, skip_special_tokens=True) == "onetwo"
    encoding = tiktoken_from(folder)
    assert encoding.eot_token == eos and encoding.decode(ids) == "one<|endoftext|>two"
    assert encoding.encode(EOS_TOKEN, allowed_special={EOS_TOKEN}) == [eos]  # asked for by name only


def test_lm_evaluation_harness_tokenizes_with_our_ids(tmp_path):
    lm_utils = pytest.importorskip("lm_eval.models.utils")
    tokenizer = load_tokenizer("shakespeare-4k")
    auto = auto_tokenizer(model_dir_with(tokenizer, tmp_path / "model"))
    prefix_id = auto.bos_token_id if auto.bos_token_id is not None else auto.eos_token_id
    assert prefix_id == tokenizer.eos_id  # what lm-eval puts before a context-free continuation

    def tok_encode(string, add_special_tokens):  # lm_eval's HFLM.tok_encode (0.4), without its model
        kwargs = lm_utils._add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and lm_utils.has_bos_prefix(string, auto.decode(prefix_id)):
            kwargs["add_special_tokens"] = False
        return auto.encode(string, **kwargs)

    for text in (MIXED, *LITERAL_EOS_TEXTS):
        for add_special_tokens in (None, True, False):
            assert tok_encode(text, add_special_tokens) == tokenizer.encode(text), (text, add_special_tokens)
        batch = auto([text, text + " more"], padding="longest", add_special_tokens=False)  # tok_batch_encode
        assert batch["input_ids"][0][:len(tokenizer.encode(text))] == tokenizer.encode(text)


def test_tiktoken_reads_the_current_ranks_even_where_its_cache_holds_an_older_file(tmp_path):
    folder = tmp_path / "model"
    small = load_tokenizer("shakespeare-4k")
    model_dir_with(small, folder)
    assert tiktoken_from(folder).n_vocab == small.n_vocab  # now cached under this path
    gpt2 = load_tokenizer("gpt2")
    model_dir_with(gpt2, folder)  # the same path, other ranks (a run folder overwritten)
    assert tiktoken_from(folder).encode_ordinary(MIXED) == gpt2.encode(MIXED)


# ------------------------------------------------------- imports and exports
def test_a_tokenizer_json_with_the_end_of_text_as_an_added_token_still_imports_as_tiktoken_ranks(tmp_path):
    tokenizer = load_tokenizer("shakespeare-4k")
    hf = build_hf_tokenizer(tokenizer)
    hf.add_special_tokens([tokenizers.AddedToken(EOS_TOKEN, special=True, normalized=False)])
    old_style = json.loads(hf.to_str())  # GPT-2's own file, and our exports before this change
    assert [t["content"] for t in old_style["added_tokens"]] == [EOS_TOKEN]
    new_style = json.loads(build_hf_tokenizer(tokenizer).to_str())
    assert new_style["added_tokens"] == [] and new_style["model"]["vocab"][EOS_TOKEN] == tokenizer.eos_id
    for data in (old_style, new_style):
        ranks, pattern = ranks_from_tokenizer_json(data)
        assert ranks == tokenizer.encoding._mergeable_ranks and pattern == tokenizer.pattern


def test_an_export_imported_back_writes_the_same_tokenizer_files(tmp_path):
    tokenizer = load_tokenizer("shakespeare-4k")
    save_model_dir(tmp_path / "ours", Gemma3Model(tiny_config(vocab_size=tokenizer.n_vocab)), tokenizer)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "back")
    back = load_model_dir(tmp_path / "back")[1]
    assert back.encode(MIXED) == tokenizer.encode(MIXED)
    for name in ("tokenizer.json", "tokenizer.tiktoken"):
        assert (tmp_path / "back" / name).read_bytes() == (tmp_path / "ours" / name).read_bytes(), name
    assert_loads_everywhere_with_our_ids(tmp_path / "back", tokenizer)


@pytest.mark.parametrize("template", [False, True], ids=["base", "instruction-tuned"])
def test_an_imported_gemma_tokenizer_keeps_its_tokenizer_json_and_has_no_tiktoken_form(template, tmp_path,
                                                                                       monkeypatch):
    from test_hf_interop import GEMMA_CHAT_TEMPLATE, _gemma_like_checkpoint

    from gemma_core.run import model_dir as model_dir_module

    settings = {"add_bos_token": True, "bos_token": "<bos>", "eos_token": "<eos>"}
    if template:
        settings["chat_template"] = GEMMA_CHAT_TEMPLATE
    _gemma_like_checkpoint(tmp_path / "hf", template=True, tokenizer_config=settings)
    import_hf(tmp_path / "hf", tmp_path / "ours")
    folder = tmp_path / "ours"
    assert (folder / "tokenizer.json").read_bytes() == (tmp_path / "hf" / "tokenizer.json").read_bytes()
    assert not (folder / "tokenizer.tiktoken").exists() and not (folder / "tokenizer.tiktoken.json").exists()
    monkeypatch.setattr(model_dir_module, "tokenizer_from_spec", lambda s, d=None: hf_tokenizer_from_spec(s, d))
    tokenizer = load_model_dir(folder)[1]
    auto = auto_tokenizer(folder)
    assert (auto.eos_token, auto.eos_token_id, auto.bos_token_id) == ("<eos>", 1, 2)
    if template:  # the chat template's markers are tokens, as in our chat path
        messages = [{"role": "user", "content": "hello"}]
        rendered = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = auto.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert ids == tokenizer.encode_document(rendered, special_tokens=True)
    else:  # special-token text in a prompt is text, as in ours; <bos> first, as Gemma trained
        text = "hello <eos> world"
        assert auto(text)["input_ids"] == tokenizer.encode_document(text) == [2, *tokenizer.encode(text)]
        assert 1 not in tokenizer.encode(text)
