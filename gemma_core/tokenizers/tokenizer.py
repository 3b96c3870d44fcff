"""Tokenizers: tiktoken encodings that work offline.

Three ways to name a tokenizer, all recorded in a checkpoint's ``config.json``:

* ``gpt2``: GPT-2's byte-level BPE (the seed's tokenizer), built from merge
  ranks shipped with this package, so it never downloads anything;
* ``shakespeare-4k``: a 4,096-token BPE trained on the bundled Shakespeare
  corpus, the tokenizer of the ``demo`` and ``nano`` presets;
* a path to a ``.tiktoken`` ranks file (``base64-token rank`` per line), such as
  ``gemma-core tokenizer train`` writes; or any other encoding name tiktoken
  itself can load (which may need the network the first time).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np
import tiktoken

from gemma_core.errors import UserError

EOS_TOKEN = "<|endoftext|>"

# GPT-2's pre-tokenizer pattern (tiktoken's r50k_base).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The pattern our own BPE tokenizers split on (GPT-4's, digits in runs of up to three).
TRAIN_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)

BUILTIN_RANKS = {
    "gpt2": ("gpt2.tiktoken.gz", GPT2_PATTERN),
    "shakespeare-4k": ("shakespeare-4k.tiktoken.gz", TRAIN_PATTERN),
}


@dataclass
class Tokenizer:
    """A tiktoken encoding plus what a checkpoint needs to rebuild it."""

    encoding: tiktoken.Encoding
    name: str  # a builtin name, a tiktoken encoding name, or "file"
    pattern: str
    ranks_path: Path | None = None  # set when the ranks come from a user's file

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    @property
    def eos_id(self) -> int:
        return self.encoding.eot_token

    @property
    def bos_id(self) -> None:
        """No beginning-of-text token: documents are only separated, by EOS (GPT-2's way)."""
        return None

    def encode(self, text: str) -> list[int]:
        """Encode ordinary text; special-token strings in it are treated as text."""
        return self.encoding.encode_ordinary(text)

    def encode_document(self, text: str, special_tokens: bool = False) -> list[int]:
        """A whole document or prompt: the text, after BOS where the tokenizer has one.
        ``special_tokens``: special-token text in it is read as those tokens."""
        return self.encoding.encode(text, allowed_special="all") if special_tokens else self.encode(text)

    @property
    def chat_template(self) -> None:
        """No chat template: our tokenizers are for pretraining (chat uses a plain layout)."""
        return None

    def encode_batch(self, texts: list[str], num_threads: int = 4) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)

    def spec(self) -> dict:
        """What ``config.json`` records so the same tokenizer can be rebuilt."""
        if self.ranks_path is not None:
            return {"kind": "file", "file": "tokenizer.tiktoken", "pattern": self.pattern,
                    "eos_token": EOS_TOKEN, "n_vocab": self.n_vocab}
        return {"kind": "builtin" if self.name in BUILTIN_RANKS else "tiktoken",
                "name": self.name, "n_vocab": self.n_vocab}

    def save_into(self, directory: Path) -> dict:
        """Copy a file-based tokenizer into a checkpoint directory; return its spec."""
        from gemma_core import atomic

        if self.ranks_path is not None:
            target = directory / "tokenizer.tiktoken"
            if self.ranks_path.resolve() != target.resolve():
                with atomic.atomic_path(target) as tmp:
                    shutil.copyfile(self.ranks_path, tmp)
        return self.spec()


def _encoding(name: str, ranks: dict[bytes, int], pattern: str) -> tiktoken.Encoding:
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={EOS_TOKEN: len(ranks)})


def read_ranks(path: Path) -> dict[bytes, int]:
    """Read tiktoken's text ranks format, gzip-compressed or not, checking every line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: tokenizer file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .tiktoken ranks file") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except ValueError:
            raise UserError(
                f"{path}:{number}: not a tiktoken ranks line ('base64-token rank'); "
                "give a file written by 'gemma-core tokenizer train'") from None
        ranks[token] = rank
    if not ranks:
        raise UserError(f"{path}: no ranks in file; give a .tiktoken ranks file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: ranks are not the numbers 0..{len(ranks) - 1} each once")
    missing = next((b for b in range(256) if bytes([b]) not in ranks), None)
    if missing is not None:  # tiktoken would fail (a panic) on the first text holding that byte
        raise UserError(f"{path}: byte {missing:#04x} has no token; a byte-level BPE ranks file holds "
                        "all 256 single bytes (write one with 'gemma-core tokenizer train')")
    return ranks


def ranks_text(ranks: dict[bytes, int]) -> str:
    """tiktoken's text ranks format: ``base64-token rank`` a line, in rank order."""
    return "".join(f"{base64.b64encode(token).decode()} {rank}\n"
                   for token, rank in sorted(ranks.items(), key=lambda item: item[1]))


def write_ranks(ranks: dict[bytes, int], path: Path) -> None:
    """Write tiktoken's text ranks format atomically."""
    from gemma_core import atomic

    atomic.write_text(path, ranks_text(ranks))


def _builtin(name: str) -> Tokenizer:
    filename, pattern = BUILTIN_RANKS[name]
    with resources.as_file(resources.files("gemma_core.assets") / filename) as path:
        ranks = read_ranks(Path(path))
    return Tokenizer(_encoding(name, ranks, pattern), name=name, pattern=pattern)


def from_ranks_file(path: str | Path, pattern: str = TRAIN_PATTERN) -> Tokenizer:
    path = Path(path)
    ranks = read_ranks(path)
    return Tokenizer(_encoding(path.stem, ranks, pattern), name="file", pattern=pattern,
                     ranks_path=path)


def load_tokenizer(name_or_path: str) -> Tokenizer:
    """A builtin name, a path to a ranks file, or a tiktoken encoding name."""
    if name_or_path in BUILTIN_RANKS:
        return _builtin(name_or_path)
    if name_or_path.endswith((".tiktoken", ".tiktoken.gz")) or os.sep in name_or_path:
        return from_ranks_file(name_or_path)
    try:
        encoding = tiktoken.get_encoding(name_or_path)
    except ValueError:
        raise UserError(
            f"unknown tokenizer {name_or_path!r}; use one of {', '.join(BUILTIN_RANKS)}, "
            "a .tiktoken ranks file, or a tiktoken encoding name") from None
    except Exception as err:  # tiktoken downloads unknown-to-disk encodings
        raise UserError(
            f"tokenizer {name_or_path!r} could not be loaded ({type(err).__name__}); "
            "tiktoken fetches it from the network on first use; use 'gpt2' (shipped) "
            "or a .tiktoken ranks file offline") from None
    return Tokenizer(encoding, name=name_or_path, pattern=encoding._pat_str)


# ----------------------------------------------------------------- bits per byte
def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for; special tokens (EOS) and unused ids count 0.

    Exact bits per byte of a batch: ``sum(loss over targets) / ln 2`` divided by
    ``lengths[targets].sum()``; it does not depend on the tokenizer, so models
    with different tokenizers compare fairly.
    """
    special = {tokenizer.encoding.encode_single_token(s) for s in tokenizer.encoding.special_tokens_set}
    lengths = np.zeros(tokenizer.n_vocab, dtype=np.int64)
    for token_id in range(tokenizer.n_vocab):
        if token_id in special:
            continue
        try:
            lengths[token_id] = len(tokenizer.token_bytes(token_id))
        except KeyError:  # a gap in the id space (some tiktoken encodings have them)
            pass
    return lengths


# -------------------------------------------------------------------- training
def train_bpe(texts: Iterable[str], vocab_size: int, pattern: str = TRAIN_PATTERN) -> dict[bytes, int]:
    """Train byte-level BPE merge ranks with rustbpe.

    ``vocab_size`` counts every id including ``<|endoftext|>``, so the ranks hold
    ``vocab_size - 1`` tokens (256 bytes plus the merges).
    """
    import rustbpe

    if vocab_size < 257 + 1:
        raise UserError(f"--vocab_size {vocab_size} is too small; byte-level BPE needs at least 258")
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - 1, pattern=pattern)
    return {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

