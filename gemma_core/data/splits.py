"""Splits: the training, validation and test text of a run, tokenized and cut into windows.

``prepare_datasets`` ties the stages together for the trainer, including the
holdout split used when only a training path is given.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from gemma_core.data.documents import DataOptions
from gemma_core.data.token_cache import InMemoryDocuments, TokenShards, build_token_cache
from gemma_core.data.windows import TokenWindows
from gemma_core.errors import UserError
from gemma_core.tokenizers.tokenizer import Tokenizer, token_byte_lengths
from gemma_core.data.corpus import training_works, validation_works


# ------------------------------------------------------------------------ splits
def split_holdout(n_tokens: int, val_fraction: float, max_length: int) -> int:
    """The token index where validation starts: the last ``val_fraction`` is held out.

    The split is one contiguous cut, so no window holds both training and
    validation tokens. Both sides must fit at least one window.
    """
    if not 0 < val_fraction <= 0.5:
        raise UserError(f"--val_fraction {val_fraction} must be above 0 and at most 0.5")
    n_val = max(1, round(n_tokens * val_fraction))
    split = n_tokens - n_val
    need = max_length + 1
    if n_val < need or split < need:
        raise UserError(f"holding out {val_fraction:g} of {n_tokens} tokens leaves {split} for "
                        f"training and {n_val} for validation, but each needs at least {need} "
                        f"(--max_length {max_length} + 1); give --val_dataset_path, add text, or lower "
                        "--max_length")
    return split


@dataclass
class DataSplit:
    """One split's windows and how much text it holds."""

    name: str
    windows: TokenWindows
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the text (the bits-per-byte denominator)
    description: str
    n_documents: int | None = None  # unknown for a holdout cut that splits a document
    from_cache: bool = False


@dataclass
class PreparedData:
    train: DataSplit
    val: DataSplit
    test: DataSplit | None = None
    notes: list[str] = field(default_factory=list)  # e.g. skipped bad lines, for the CLI to show


def _bytes_of(tokens: np.ndarray, lengths: np.ndarray) -> int:
    total = 0
    for i in range(0, len(tokens), 1 << 24):  # chunks keep the int64 temporaries small
        total += int(lengths[np.asarray(tokens[i:i + (1 << 24)])].sum())
    return total


def _named(source) -> str:
    if isinstance(source, InMemoryDocuments):
        return f"{len(source.documents):,} texts from Python"
    return str(source)


def prepare_datasets(train_path, val_path, test_path, tokenizer: Tokenizer,
                     options: DataOptions, max_length: int, stride: int | None,
                     val_fraction: float, cache_dir: str | Path | None = None,
                     progress: Callable[[str, int, int, int], None] | None = None,
                     cancel: threading.Event | None = None,
                     train_texts: Sequence[str] = (), val_texts: Sequence[str] = ()) -> PreparedData:
    """Tokenize (or reuse) each split and cut it into windows.

    * no ``train_path`` (nor ``train_texts``): the bundled Shakespeare corpus, split by work;
    * ``train_path`` or ``train_texts`` only: the last ``val_fraction`` of its tokens is validation;
    * training and validation data both given: each is its own split.

    ``train_texts`` and ``val_texts`` are documents held in memory (from Python).
    Training windows use ``stride``; validation and test windows use
    ``stride = max_length`` so each token is scored once (the tail window aside).
    ``progress(split, docs_done, bytes_done, total_bytes)`` reports tokenization;
    setting ``cancel`` stops it (``Cancelled``).
    """
    notes: list[str] = []
    if train_texts:
        train_path = InMemoryDocuments("python:train_texts", list(train_texts))
    if val_texts:
        val_path = InMemoryDocuments("python:val_texts", list(val_texts))

    def build(name: str, source) -> TokenShards:
        callback = None if progress is None else (lambda d, b, t: progress(name, d, b, t))
        shards = build_token_cache(source, tokenizer, options, cache_dir, progress=callback, cancel=cancel)
        if shards.bad_lines:
            notes.append(f"{name}: skipped {shards.bad_lines} bad JSONL lines")
        if shards.repaired:
            notes.append(f"{name}: the token cache {shards.directory} was damaged ({shards.repaired}); "
                         "it was built again")
        return shards

    def split(name: str, tokens, shards: TokenShards, n_bytes: int, description: str,
              step: int | None, whole: bool) -> DataSplit:
        windows = TokenWindows(tokens, max_length, step, name=f"{name} split ({description})")
        return DataSplit(name=name, windows=windows,
                         n_tokens=len(tokens), n_bytes=n_bytes, description=description,
                         n_documents=shards.n_documents if whole else None,
                         from_cache=shards.from_cache)

    if train_path is None:
        if val_path is not None:
            raise UserError("--val_dataset_path needs --train_dataset_path; without it the bundled Shakespeare "
                            "corpus is used with its own validation works")

        train_shards = build("train", InMemoryDocuments(
            "bundled:shakespeare:train", [w.text for w in training_works()]))
        val_shards = build("val", InMemoryDocuments(
            "bundled:shakespeare:validation", [w.text for w in validation_works()]))
        train = split("train", train_shards.tokens, train_shards, train_shards.n_bytes,
                      "bundled Shakespeare (training works)", stride, True)
        val = split("val", val_shards.tokens, val_shards, val_shards.n_bytes,
                    "bundled Shakespeare (validation works)", None, True)
    elif val_path is None:
        shards = build("train", train_path)
        cut = split_holdout(shards.n_tokens, val_fraction, max_length)
        tokens = shards.tokens
        lengths = token_byte_lengths(tokenizer)
        train_bytes, val_bytes = _bytes_of(tokens[:cut], lengths), _bytes_of(tokens[cut:], lengths)
        percent = f"{val_fraction * 100:g}%"
        train = split("train", tokens[:cut], shards, train_bytes,
                      f"{_named(train_path)} (all but the last {percent} of tokens)", stride, False)
        val = split("val", tokens[cut:], shards, val_bytes,
                    f"{_named(train_path)} (last {percent} of tokens)", None, False)
    else:
        train_shards, val_shards = build("train", train_path), build("val", val_path)
        train = split("train", train_shards.tokens, train_shards, train_shards.n_bytes,
                      _named(train_path), stride, True)
        val = split("val", val_shards.tokens, val_shards, val_shards.n_bytes,
                    _named(val_path), None, True)

    test = None
    if test_path is not None:
        test_shards = build("test", test_path)
        test = split("test", test_shards.tokens, test_shards, test_shards.n_bytes,
                     str(test_path), None, True)
    return PreparedData(train=train, val=val, test=test, notes=notes)
