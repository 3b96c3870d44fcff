"""Specification of the data pipeline: reading, token cache, windows, batches, splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from gemma_core.data import (
    DataOptions,
    InMemoryDocuments,
    ReadStats,
    TokenWindows,
    TrainBatches,
    build_token_cache,
    default_cache_dir,
    expand_paths,
    fixed_validation_batches,
    iter_documents,
    prepare_datasets,
    split_holdout,
    token_dtype,
)
from gemma_core.data.corpus import training_works, validation_works
from gemma_core.errors import UserError
from gemma_core.tokenizers.tokenizer import (
    EOS_TOKEN,
    GPT2_PATTERN,
    Tokenizer,
    load_tokenizer,
    token_byte_lengths,
)

HELLO_WORLD = [15496, 995]  # GPT-2's ids for "Hello world"
GPT2_EOS = 50256


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return load_tokenizer("gpt2")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tokens_of(shards) -> list[int]:
    return [int(t) for t in shards.tokens]


def counting(tokenizer: Tokenizer) -> tuple[Tokenizer, list]:
    """A copy of ``tokenizer`` whose encode_batch records each call."""
    calls: list = []
    spy = Tokenizer(tokenizer.encoding, tokenizer.name, tokenizer.pattern, tokenizer.ranks_path)

    def encode_batch(texts, num_threads=4):
        calls.append(len(texts))
        return tokenizer.encode_batch(texts, num_threads=num_threads)

    spy.encode_batch = encode_batch
    return spy, calls


# ------------------------------------------------------------------ EOS layout
def test_eos_separates_documents_but_neither_starts_nor_ends_the_corpus(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}, {"text": "Hello world"}])
    shards = build_token_cache(data, gpt2, DataOptions(), cache)
    assert tokens_of(shards) == HELLO_WORLD + [GPT2_EOS] + HELLO_WORLD
    assert shards.n_documents == 2
    assert shards.n_bytes == 2 * len("Hello world")


def test_documents_are_concatenated_without_eos_when_asked(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}, {"text": "Hello world"}])
    shards = build_token_cache(data, gpt2, DataOptions(add_eos_between_documents=False), cache)
    assert tokens_of(shards) == HELLO_WORLD + HELLO_WORLD


def test_in_memory_documents_are_tokenized_like_files(gpt2, cache):
    shards = build_token_cache(InMemoryDocuments("two-hellos", ["Hello world", "Hello world"]),
                               gpt2, DataOptions(), cache)
    assert tokens_of(shards) == HELLO_WORLD + [GPT2_EOS] + HELLO_WORLD
    again = build_token_cache(InMemoryDocuments("two-hellos", ["Hello world", "Hello world"]),
                              gpt2, DataOptions(), cache)
    assert again.from_cache


# ------------------------------------------------------------------- reading
def test_txt_file_is_one_document_unless_split_on_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first para\nstill first\n\n  \nsecond\n\n\nthird\n", encoding="utf-8")
    assert list(iter_documents([path])) == [path.read_text()]
    split = list(iter_documents([path], DataOptions(split_on_blank_lines=True)))
    assert split == ["first para\nstill first", "second", "third"]


def test_jsonl_reads_a_custom_text_field_and_ignores_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "one", "text": 5}\n\n   \n{"body": "two"}\n', encoding="utf-8")
    assert list(iter_documents([path], DataOptions(text_field="body"))) == ["one", "two"]


def test_malformed_jsonl_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.jsonl:3: not valid JSON.*--skip_bad_lines"):
        list(iter_documents([path]))


def test_missing_text_field_names_the_field_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"content": "no text here"}])
    with pytest.raises(UserError, match=r"d\.jsonl:2: no 'text' field \(keys: content\).*--text_field"):
        list(iter_documents([path]))


def test_non_string_text_field_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": ["a", "list"]}])
    with pytest.raises(UserError, match=r"d\.jsonl:1: field 'text' is list, expected a string"):
        list(iter_documents([path]))


def test_a_line_that_is_not_an_object_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["just a string"])
    with pytest.raises(UserError, match=r"d\.jsonl:1: expected a JSON object"):
        list(iter_documents([path]))


def test_invalid_utf8_names_file_and_line(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: not valid UTF-8"):
        list(iter_documents([jsonl]))
    txt = tmp_path / "t.txt"
    txt.write_bytes(b"line one\nline \xff two\n")
    with pytest.raises(UserError, match=r"t\.txt:2: not valid UTF-8"):
        list(iter_documents([txt]))


def test_skip_bad_lines_skips_and_counts_them(tmp_path, gpt2, cache):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "Hello world"}\nnot json\n{"other": 1}\n{"text": "\xff"}\n'
                     b'{"text": "Hello world"}\n')
    options = DataOptions(skip_bad_lines=True)
    stats = ReadStats()
    assert list(iter_documents([path], options, stats)) == ["Hello world", "Hello world"]
    assert (stats.documents, stats.bad_lines) == (2, 3)
    assert stats.first_bad_line.startswith(f"{path}:2:")
    shards = build_token_cache(path, gpt2, options, cache)
    assert shards.bad_lines == 3
    assert tokens_of(shards) == HELLO_WORLD + [GPT2_EOS] + HELLO_WORLD


def test_empty_file_and_whitespace_only_corpus_are_errors(tmp_path, gpt2, cache):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match=r"empty\.txt: no text found"):
        list(iter_documents([empty]))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": "  \n\t"}, {"text": ""}])
    with pytest.raises(UserError, match=r"blank\.jsonl: no text found"):
        build_token_cache(blank, gpt2, DataOptions(), cache)


def test_whitespace_only_documents_are_skipped_among_real_ones(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": " \n "}, {"text": "b"}])
    stats = ReadStats()
    assert list(iter_documents([path], DataOptions(), stats)) == ["a", "b"]
    assert stats.empty_documents == 1


# --------------------------------------------------------------------- paths
def test_directories_expand_recursively_to_sorted_data_files(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for name in ("b.txt", "a.jsonl", "sub/c.txt", "notes.md", ".hidden.txt"):
        (root / name).write_text("x")
    assert expand_paths(str(root)) == [root / "a.jsonl", root / "b.txt", root / "sub" / "c.txt"]


def test_globs_expand_and_duplicates_are_kept_once(tmp_path):
    for name in ("x1.jsonl", "x2.jsonl", "y.txt"):
        (tmp_path / name).write_text("x")
    found = expand_paths([str(tmp_path / "x*.jsonl"), str(tmp_path / "x1.jsonl")])
    assert found == [tmp_path / "x1.jsonl", tmp_path / "x2.jsonl"]


def test_bad_paths_are_user_errors_naming_the_path(tmp_path):
    with pytest.raises(UserError, match=r"missing\.jsonl: no such file"):
        expand_paths(str(tmp_path / "missing.jsonl"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=r"empty_dir: directory holds no \.jsonl or \.txt"):
        expand_paths(str(tmp_path / "empty_dir"))
    with pytest.raises(UserError, match=r"nothing\*\.txt: no files match"):
        expand_paths(str(tmp_path / "nothing*.txt"))
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(UserError, match=r"data\.csv: unsupported file type"):
        expand_paths(str(tmp_path / "data.csv"))


# --------------------------------------------------------------- token cache
def test_second_build_reuses_the_cache_without_tokenizing(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}] * 3)
    spy, calls = counting(gpt2)
    first = build_token_cache(data, spy, DataOptions(), cache)
    assert calls and not first.from_cache
    calls.clear()
    second = build_token_cache(data, spy, DataOptions(), cache)
    assert calls == [] and second.from_cache
    assert second.directory == first.directory
    assert tokens_of(second) == tokens_of(first)
    meta = json.loads((first.directory / "meta.json").read_text())
    assert meta["n_tokens"] == 8 and meta["n_documents"] == 3 and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == gpt2.spec() and meta["sources"][0]["path"] == str(data.resolve())


@pytest.mark.parametrize("damage", ["delete meta", "truncate tokens", "garble meta"])
def test_half_built_cache_is_rebuilt_not_read(tmp_path, gpt2, cache, damage):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}] * 3)
    first = build_token_cache(data, gpt2, DataOptions(), cache)
    expected = tokens_of(first)
    if damage == "delete meta":
        (first.directory / "meta.json").unlink()
    elif damage == "truncate tokens":
        with open(first.directory / "tokens.bin", "r+b") as f:
            f.truncate(6)
    else:
        (first.directory / "meta.json").write_text("{not json")
    spy, calls = counting(gpt2)
    rebuilt = build_token_cache(data, spy, DataOptions(), cache)
    assert calls and not rebuilt.from_cache
    assert tokens_of(rebuilt) == expected


def test_changing_a_file_invalidates_the_cache(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}])
    first = build_token_cache(data, gpt2, DataOptions(), cache)
    write_jsonl(data, [{"text": "Hello world"}, {"text": "Hello world"}])
    changed = build_token_cache(data, gpt2, DataOptions(), cache)
    assert not changed.from_cache and changed.directory != first.directory
    assert tokens_of(changed) == HELLO_WORLD + [GPT2_EOS] + HELLO_WORLD
    # Same size and content, new modification time: rebuilt too.
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not build_token_cache(data, gpt2, DataOptions(), cache).from_cache


def test_options_and_tokenizer_are_part_of_the_cache_key(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}, {"text": "Hello world"}])
    base = build_token_cache(data, gpt2, DataOptions(), cache)
    no_eos = build_token_cache(data, gpt2, DataOptions(add_eos_between_documents=False), cache)
    other_tok = build_token_cache(data, load_tokenizer("shakespeare-4k"), DataOptions(), cache)
    assert len({base.directory, no_eos.directory, other_tok.directory}) == 3
    assert not no_eos.from_cache and not other_tok.from_cache


def test_progress_reports_documents_and_bytes_up_to_the_total(tmp_path, gpt2, cache):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello world"}] * 5)
    seen = []
    build_token_cache(data, gpt2, DataOptions(), cache, progress=lambda *a: seen.append(a))
    total = data.stat().st_size
    assert seen[-1] == (5, total, total)
    assert all(b <= t for _, b, t in seen)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_STUDIO_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("GEMMA_STUDIO_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "gemma-studio" / "tokens"


def big_vocab_tokenizer() -> Tokenizer:
    """Byte-level tokenizer whose EOS id (70000) needs more than 16 bits."""
    ranks = {bytes([b]): b for b in range(256)}
    encoding = tiktoken.Encoding("big", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={EOS_TOKEN: 70_000})
    return Tokenizer(encoding, name="big", pattern=GPT2_PATTERN)


def test_tokens_are_stored_as_uint16_when_they_fit_else_uint32(tmp_path, gpt2, cache):
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "ab"}, {"text": "c"}])
    assert build_token_cache(data, gpt2, DataOptions(), cache).dtype == "uint16"
    big = build_token_cache(data, big_vocab_tokenizer(), DataOptions(), cache)
    assert big.dtype == "uint32"
    assert tokens_of(big) == [ord("a"), ord("b"), 70_000, ord("c")]


# ------------------------------------------------------------------- windows
def test_windows_overlap_by_stride_and_targets_shift_by_one():
    windows = TokenWindows(np.arange(11, dtype=np.uint16), max_length=4, stride=2)
    assert len(windows) == 4  # starts 0, 2, 4, 6; the last reaches token 10 exactly
    x, y = windows.window(1)
    assert x.tolist() == [2, 3, 4, 5] and y.tolist() == [3, 4, 5, 6]
    assert x.dtype == torch.int64
    xb, yb = windows.batch([0, 3])
    assert xb.shape == yb.shape == (2, 4)
    assert xb.tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]] and yb[1].tolist() == [7, 8, 9, 10]


def test_tail_is_covered_by_a_window_aligned_to_the_end():
    windows = TokenWindows(np.arange(12, dtype=np.uint16), max_length=4, stride=4)
    assert len(windows) == 3  # starts 0, 4 and the tail window at 7
    assert [windows.start(i) for i in range(3)] == [0, 4, 7]
    x, y = windows.window(2)
    assert x.tolist() == [7, 8, 9, 10] and y.tolist() == [8, 9, 10, 11]
    assert windows.batch([2])[1][0, -1].item() == 11


def test_too_short_corpus_says_how_many_tokens_and_which_max_length_fits():
    with pytest.raises(UserError, match=r"only 5 tokens.*--max_length 8.*--max_length 4 or less"):
        TokenWindows(np.arange(5, dtype=np.uint16), max_length=8)


def test_stride_must_not_skip_tokens():
    with pytest.raises(UserError, match="--stride 5"):
        TokenWindows(np.arange(50), max_length=4, stride=5)


# ------------------------------------------------------------------- batches
def windows_of(n_windows: int, max_length: int = 3) -> TokenWindows:
    # Non-overlapping windows whose first token is their index times max_length.
    return TokenWindows(np.arange(n_windows * max_length + 1), max_length, max_length)


def first_tokens(batch) -> list[int]:
    return (batch[0][:, 0] // 3).tolist()


def test_train_batches_are_deterministic_and_each_epoch_covers_every_window():
    windows = windows_of(10)
    a = TrainBatches(windows, batch_size=5, seed=7)
    b = TrainBatches(windows, batch_size=5, seed=7)
    epoch0 = [first_tokens(next(a)) for _ in range(2)]
    assert epoch0 == [first_tokens(next(b)) for _ in range(2)]
    epoch1 = [first_tokens(next(a)) for _ in range(2)]
    assert sorted(sum(epoch0, [])) == sorted(sum(epoch1, [])) == list(range(10))
    assert epoch0 != epoch1  # a new order every epoch
    other_seed = TrainBatches(windows, batch_size=5, seed=8)
    assert [first_tokens(next(other_seed)) for _ in range(2)] != epoch0


def test_last_batch_of_an_epoch_is_filled_not_dropped():
    batches = TrainBatches(windows_of(7), batch_size=3, seed=0)
    assert batches.steps_per_epoch == 3
    seen = [first_tokens(next(batches)) for _ in range(3)]
    assert all(len(b) == 3 for b in seen)
    assert set(sum(seen, [])) == set(range(7))
    assert batches.state_dict() == {"epoch": 1, "position": 0, "global_batch_size": 3}


def test_resumed_batches_equal_the_uninterrupted_ones():
    windows = windows_of(9)
    straight = TrainBatches(windows, batch_size=2, seed=3)
    expected = [next(straight) for _ in range(12)]  # crosses two epoch boundaries
    first = TrainBatches(windows, batch_size=2, seed=3)
    for _ in range(7):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))
    assert set(state) == {"epoch", "position", "global_batch_size"}
    assert all(type(v) is int for v in state.values())
    resumed = TrainBatches(windows, batch_size=2, seed=3)
    resumed.load_state_dict(state)
    for want in expected[7:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_ranks_together_see_what_one_process_with_the_whole_batch_sees():
    windows = windows_of(11)
    single = TrainBatches(windows, batch_size=4, seed=5)
    ranks = [TrainBatches(windows, batch_size=2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(7):  # crosses epoch boundaries (3 steps per epoch)
        whole = first_tokens(next(single))
        assert first_tokens(next(ranks[0])) + first_tokens(next(ranks[1])) == whole


def test_resuming_with_twice_the_ranks_continues_after_the_windows_already_seen():
    windows = windows_of(40)
    one = TrainBatches(windows, batch_size=4, seed=5)
    seen = [first_tokens(next(one)) for _ in range(4)]  # 16 windows: two steps of the 4 ranks
    ranks = [TrainBatches(windows, batch_size=2, seed=5, rank=r, world_size=4) for r in range(4)]
    for batches in ranks:
        batches.load_state_dict(json.loads(json.dumps(one.state_dict())))
    following = sum((first_tokens(next(b)) for b in ranks), [])
    assert following == first_tokens(next(one)) + first_tokens(next(one))
    assert not set(following) & set(sum(seen, []))


def test_damaged_loader_state_is_a_user_error():
    batches = TrainBatches(windows_of(4), batch_size=2)
    with pytest.raises(UserError, match="epoch"):
        batches.load_state_dict({"epoch": "one"})


# ---------------------------------------------------------------- validation
def test_validation_batches_are_a_fixed_evenly_spread_subset():
    windows = windows_of(100)
    chosen = fixed_validation_batches(windows, batch_size=4, max_batches=3)
    assert chosen == fixed_validation_batches(windows, batch_size=4, max_batches=3)
    flat = sum(chosen, [])
    assert len(chosen) == 3 and len(flat) == len(set(flat)) == 12
    assert flat[0] == 0 and flat[-1] >= 90  # spread to the end, not only the beginning
    everything = fixed_validation_batches(windows, batch_size=32, max_batches=None)
    assert sum(everything, []) == list(range(100)) and len(everything[-1]) == 4
    assert sum(fixed_validation_batches(5, batch_size=2, max_batches=10), []) == list(range(5))


# ---------------------------------------------------------------- bits per byte
def test_token_byte_lengths_add_up_to_the_utf8_length(gpt2):
    lengths = token_byte_lengths(gpt2)
    assert lengths.shape == (gpt2.n_vocab,)
    assert lengths[gpt2.eos_id] == 0
    text = "Naïve café – 東京 🚀 tokens\n\ttab"
    ids = gpt2.encode(text)
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


def test_token_byte_lengths_treat_gaps_in_the_id_space_as_zero():
    lengths = token_byte_lengths(big_vocab_tokenizer())
    assert lengths[:256].tolist() == [1] * 256
    assert lengths[256:].sum() == 0


# -------------------------------------------------------------------- splits
def test_split_holdout_takes_the_last_fraction_and_checks_both_sides():
    assert split_holdout(1000, 0.1, max_length=16) == 900
    for bad in (0, -0.1, 0.6):
        with pytest.raises(UserError, match="--val_fraction"):
            split_holdout(1000, bad, max_length=16)
    with pytest.raises(UserError, match="each needs at least 65"):
        split_holdout(1000, 0.05, max_length=64)


def sentences(n: int, tag: str) -> list[dict]:
    return [{"text": f"{tag} sentence number {i} is here."} for i in range(n)]


def test_prepare_datasets_holds_out_the_end_of_the_training_stream(tmp_path, gpt2, cache):
    train = write_jsonl(tmp_path / "train.jsonl", sentences(60, "Train"))
    data = prepare_datasets(train, None, None, gpt2, DataOptions(), max_length=8, stride=4,
                            val_fraction=0.2, cache_dir=cache)
    whole = build_token_cache(train, gpt2, DataOptions(), cache)
    assert whole.from_cache  # prepare_datasets built this very cache
    cut = split_holdout(whole.n_tokens, 0.2, 8)
    assert data.train.n_tokens == cut and data.val.n_tokens == whole.n_tokens - cut
    assert data.val.windows.tokens.tolist() == tokens_of(whole)[cut:]
    assert data.train.n_bytes + data.val.n_bytes == whole.n_bytes
    assert data.train.windows.stride == 4 and data.val.windows.stride == 8
    assert data.test is None


def test_prepare_datasets_uses_explicit_validation_and_test_files(tmp_path, gpt2, cache):
    train = write_jsonl(tmp_path / "train.jsonl", sentences(20, "Train"))
    val = write_jsonl(tmp_path / "val.jsonl", sentences(5, "Val"))
    test = tmp_path / "test.txt"
    test.write_text("Hello world " * 10, encoding="utf-8")
    data = prepare_datasets(train, val, test, gpt2, DataOptions(), max_length=8, stride=8,
                            val_fraction=0.1, cache_dir=cache)
    val_text = [row["text"] for row in sentences(5, "Val")]
    assert data.val.n_bytes == sum(len(t.encode()) for t in val_text)
    assert data.val.n_documents == 5
    assert data.val.windows.tokens.tolist()[: len(gpt2.encode(val_text[0])) + 1] == (
        gpt2.encode(val_text[0]) + [GPT2_EOS])
    assert data.test is not None and data.test.n_tokens == len(gpt2.encode("Hello world " * 10))


def test_prepare_datasets_names_the_split_that_is_too_short(tmp_path, gpt2, cache):
    train = write_jsonl(tmp_path / "train.jsonl", sentences(20, "Train"))
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "Hi"}])
    with pytest.raises(UserError, match=r"val split \(.*val\.jsonl\) has only 1 tokens"):
        prepare_datasets(train, val, None, gpt2, DataOptions(), max_length=8, stride=8,
                         val_fraction=0.1, cache_dir=cache)


def test_prepare_datasets_defaults_to_the_bundled_shakespeare(cache):
    tokenizer = load_tokenizer("shakespeare-4k")
    data = prepare_datasets(None, None, None, tokenizer, DataOptions(), max_length=64,
                            stride=64, val_fraction=0.1, cache_dir=cache)
    assert data.val.n_documents == len(validation_works()) == 4
    assert data.train.n_documents == len(training_works())
    assert data.val.n_bytes == sum(len(w.text.encode("utf-8")) for w in validation_works())
    assert data.train.n_bytes == sum(len(w.text.encode("utf-8")) for w in training_works())
    again = prepare_datasets(None, None, None, tokenizer, DataOptions(), max_length=64,
                             stride=64, val_fraction=0.1, cache_dir=cache)
    assert again.train.from_cache and again.val.from_cache
