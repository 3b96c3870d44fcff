"""Training data: read documents, tokenize them once into a cache, cut windows, batch.

The pipeline, each step its own piece so the trainer and the CLI can use them:

1. ``expand_paths`` turns what the user typed (files, directories, globs) into a
   sorted list of ``.jsonl``/``.txt`` files; ``iter_documents`` reads them as
   document strings, with one-line ``UserError``s that name the file and line.
2. ``build_token_cache`` tokenizes the documents ONCE into a flat token file
   (``uint16`` or ``uint32``) under a key derived from the inputs, the tokenizer
   and the options; later runs memory-map it (``TokenShards``) without
   tokenizing again.
3. ``TokenWindows`` cuts the token stream into ``max_length + 1`` windows
   (inputs and the targets shifted by one), ``TrainBatches`` shuffles them into
   resumable training batches, and ``fixed_validation_batches`` picks the same
   validation subset every evaluation.
4. ``prepare_datasets`` ties it together for the trainer, including the holdout
   split used when only a training path is given.

Token stream layout: ``doc1 EOS doc2 EOS ... docN``. The EOS token separates
documents (the seed's behaviour); none precedes the first document and none
ends the corpus, so a corpus of one document holds no EOS at all.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.tokenizer import Tokenizer, file_sha256

# Bump whenever the bytes in tokens.bin or the meaning of meta.json change, so
# caches written by an older version are rebuilt instead of misread.
CACHE_FORMAT_VERSION = 1
TOKENS_FILE = "tokens.bin"
META_FILE = "meta.json"
DOCUMENT_SUFFIXES = (".jsonl", ".txt")
GLOB_CHARS = "*?["

# Documents are tokenized in batches this large (whichever limit comes first):
# big enough for tiktoken's threads to pay off, small enough to keep memory flat.
BATCH_DOCUMENTS = 1024
BATCH_BYTES = 8 << 20

ProgressCallback = Callable[[int, int, int], None]  # (docs_done, bytes_done, total_bytes)


# ----------------------------------------------------------------------- options
@dataclass(frozen=True)
class DataOptions:
    """How documents are read and joined; every field is part of the cache key."""

    text_field: str = "text"  # the JSONL field that holds a document's text
    add_eos_between_documents: bool = True
    split_on_blank_lines: bool = False  # .txt: one document per blank-line-separated block
    skip_bad_lines: bool = False  # JSONL: skip (and count) unreadable lines instead of failing


@dataclass
class ReadStats:
    """What ``iter_documents`` saw; pass one in to learn what was skipped."""

    documents: int = 0
    bad_lines: int = 0  # JSONL lines skipped under skip_bad_lines
    empty_documents: int = 0  # empty or whitespace-only documents, always skipped
    first_bad_line: str | None = None  # "FILE:LINE: why", for a warning the CLI may print


# ------------------------------------------------------------------------ paths
def _has_glob(text: str) -> bool:
    return any(ch in text for ch in GLOB_CHARS)


def _usable_files_under(directory: Path) -> list[Path]:
    """Every .jsonl/.txt file below ``directory``, hidden files and folders left out."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.endswith(DOCUMENT_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found)


def expand_paths(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files, directories (every .jsonl/.txt inside, recursively) and globs -> files.

    The order is the order given, each directory's and glob's files sorted, so the
    same arguments always give the same token stream. Duplicates are kept once.
    """
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not items:
        raise UserError("no data path given; pass a .jsonl or .txt file, a directory or a glob")
    files: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file():
            if not path.name.endswith(DOCUMENT_SUFFIXES):
                raise UserError(f"{path}: unsupported file type; give .jsonl (one JSON object "
                                "per line) or .txt (plain UTF-8 text)")
            files.append(path)
        elif path.is_dir():
            found = _usable_files_under(path)
            if not found:
                raise UserError(f"{path}: directory holds no .jsonl or .txt files; "
                                "point at a directory with data files")
            files.extend(found)
        elif _has_glob(text):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                raise UserError(f"{text}: no files match this pattern; check the path")
            found = []
            for match in map(Path, matches):
                if match.is_dir():
                    found.extend(_usable_files_under(match))
                elif match.name.endswith(DOCUMENT_SUFFIXES):
                    found.append(match)
            if not found:
                raise UserError(f"{text}: pattern matches no .jsonl or .txt files; check the pattern")
            files.extend(found)
        else:
            raise UserError(f"{path}: no such file or directory; check the data path")
    unique: dict[Path, None] = {}
    for file in files:
        unique.setdefault(file, None)
    return list(unique)


# -------------------------------------------------------------------- documents
def _utf8_error(path: Path, raw: bytes, err: UnicodeDecodeError, line: int | None = None) -> UserError:
    if line is None:
        line = raw.count(b"\n", 0, err.start) + 1
    return UserError(f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x}); "
                     "re-save the file as UTF-8")


# One JSONL line is one document held in memory at once; a longer line is most
# likely not a document at all (a binary file, a dump without newlines).
MAX_LINE_BYTES = 256 * 1024 * 1024


def _binary_error(path: Path, raw: bytes, line: int | None = None) -> UserError | None:
    """A NUL byte never occurs in text: the file is binary (or UTF-16)."""
    offset = raw.find(b"\0")
    if offset < 0:
        return None
    if line is None:
        line = raw.count(b"\n", 0, offset) + 1
    return UserError(f"{path}:{line}: looks like a binary file, not text (a NUL byte); "
                     "give UTF-8 .txt or .jsonl files")


def _jsonl_documents(path: Path, options: DataOptions, stats: ReadStats) -> Iterator[tuple[str, int]]:
    """(document, file bytes consumed) for each usable line of a JSONL file."""
    field_name = options.text_field
    with open(path, "rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            consumed = len(raw)
            if consumed > MAX_LINE_BYTES:
                raise UserError(f"{path}:{number}: line is longer than {MAX_LINE_BYTES:,} bytes; "
                                "one JSONL line is one document: split it into several lines")
            binary = _binary_error(path, raw, number)
            if binary is not None:
                raise binary
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark some editors write
            if not raw.strip():
                yield "", consumed  # blank lines are allowed; "" only advances progress
                continue
            try:
                text = _jsonl_text(path, number, raw, field_name)
            except UserError as err:
                if not options.skip_bad_lines:
                    raise
                stats.bad_lines += 1
                if stats.first_bad_line is None:
                    stats.first_bad_line = str(err)
                yield "", consumed
                continue
            yield text, consumed


def _jsonl_text(path: Path, number: int, raw: bytes, field_name: str) -> str:
    where = f"{path}:{number}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _utf8_error(path, raw, err, line=number) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno}); fix the "
                        "line or pass --skip_bad_lines to skip such lines") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object per line, got {type(obj).__name__}; "
                        "write one object such as {\"text\": \"...\"} per line")
    if field_name not in obj:
        keys = ", ".join(map(str, list(obj)[:8])) or "none"
        raise UserError(f"{where}: no {field_name!r} field (keys: {keys}); pass --text_field "
                        "to name the field that holds the text")
    value = obj[field_name]
    if not isinstance(value, str):
        raise UserError(f"{where}: field {field_name!r} is {type(value).__name__}, expected a "
                        "string; fix the line or pass --text_field to pick another field")
    return value


_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")


def _txt_documents(path: Path, options: DataOptions) -> Iterator[tuple[str, int]]:
    raw = path.read_bytes()
    binary = _binary_error(path, raw)
    if binary is not None:
        raise binary
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _utf8_error(path, raw, err) from None
    text = text.removeprefix("\ufeff")
    if not options.split_on_blank_lines:
        yield text, len(raw)
        return
    blocks = _BLANK_LINES.split(text)
    for i, block in enumerate(blocks):
        # The blank-line separators belong to no document; the file's bytes are
        # reported consumed with the last block.
        yield block.strip("\r\n"), (len(raw) if i == len(blocks) - 1 else 0)


def _documents_with_progress(paths: Sequence[Path], options: DataOptions,
                             stats: ReadStats) -> Iterator[tuple[str | None, int]]:
    """(document or None, file bytes consumed so far); None marks a progress-only step."""
    consumed = 0
    for path in paths:
        try:
            pieces = (_jsonl_documents(path, options, stats) if path.suffix == ".jsonl"
                      else _txt_documents(path, options))
            for text, n in pieces:
                consumed += n
                if not text.strip():
                    if text:
                        stats.empty_documents += 1
                    yield None, consumed
                    continue
                stats.documents += 1
                yield text, consumed
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            raise UserError(f"{path}: cannot read ({err.strerror}); check the data path") from None
    if stats.documents == 0:
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more files"
        skipped = f" ({stats.bad_lines} bad lines skipped)" if stats.bad_lines else ""
        raise UserError(f"{where}: no text found{skipped}; the corpus is empty or whitespace only")


def iter_documents(paths: str | Path | Sequence[str | Path], options: DataOptions = DataOptions(),
                   stats: ReadStats | None = None) -> Iterator[str]:
    """Yield each document's text, in file order.

    ``.jsonl``: one JSON object per line, the text in ``options.text_field``;
    blank lines are ignored. ``.txt``: the whole file is one document, or each
    blank-line-separated block is one when ``options.split_on_blank_lines``.
    Empty and whitespace-only documents are skipped (counted in ``stats``).
    Raises ``UserError`` when nothing at all is left.
    """
    files = expand_paths(paths) if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not files:
        raise UserError("no data files given; pass a .jsonl or .txt file, a directory or a glob")
    stats = stats if stats is not None else ReadStats()
    for text, _ in _documents_with_progress(files, options, stats):
        if text is not None:
            yield text


# ------------------------------------------------------------------ token cache
@dataclass(frozen=True)
class InMemoryDocuments:
    """Documents held in memory (the bundled corpus), named by a caller-given identity."""

    identity: str
    documents: Sequence[str]


def default_cache_dir() -> Path:
    """``$GEMMA_STUDIO_CACHE`` if set, else ``~/.cache/gemma-studio/tokens``."""
    configured = os.environ.get("GEMMA_STUDIO_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "gemma-studio" / "tokens"


def token_dtype(n_vocab: int) -> np.dtype:
    """The narrowest unsigned type holding every id: half the disk and page cache of uint32."""
    return np.dtype(np.uint16) if n_vocab <= 1 << 16 else np.dtype(np.uint32)


def _tokenizer_identity(tokenizer: Tokenizer) -> dict:
    identity = dict(tokenizer.spec())
    identity["pattern"] = tokenizer.pattern
    # A builtin or tiktoken name fixes the ranks; a user's file may change under
    # the same name, so its contents are hashed.
    if tokenizer.ranks_path is not None:
        identity["ranks_sha256"] = file_sha256(Path(tokenizer.ranks_path))
    return identity


def _file_signature(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _source_signature(source: list[Path] | InMemoryDocuments) -> list[dict]:
    if isinstance(source, InMemoryDocuments):
        digest = hashlib.sha256()
        for doc in source.documents:
            encoded = doc.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return [{"identity": source.identity, "sha256": digest.hexdigest()}]
    return [_file_signature(path) for path in source]


def cache_key(sources: list[dict], tokenizer: Tokenizer, options: DataOptions) -> str:
    """sha256 over the inputs' signatures, the tokenizer, the options and the format."""
    payload = {"format": CACHE_FORMAT_VERSION, "sources": sources,
               "tokenizer": _tokenizer_identity(tokenizer), "options": asdict(options)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenShards:
    """A tokenized corpus on disk: ``tokens.bin`` (flat ids) plus ``meta.json``."""

    directory: Path
    n_tokens: int
    n_documents: int
    n_bytes: int  # UTF-8 bytes of the documents' text (EOS tokens add none)
    dtype: str
    tokenizer: dict
    sources: list
    bad_lines: int = 0
    from_cache: bool = False  # True when this call reused a cache and tokenized nothing

    @property
    def tokens_path(self) -> Path:
        return self.directory / TOKENS_FILE

    @cached_property
    def tokens(self) -> np.ndarray:
        """A read-only memory map of every token id, in corpus order."""
        return np.memmap(self.tokens_path, dtype=np.dtype(self.dtype), mode="r",
                         shape=(self.n_tokens,))

    @classmethod
    def open(cls, directory: Path, from_cache: bool = True) -> "TokenShards | None":
        """The cache in ``directory``, or None when it is missing, old or half-built."""
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            n_tokens = int(meta["n_tokens"])
            complete = (meta.get("format") == CACHE_FORMAT_VERSION and n_tokens > 0
                        and dtype in (np.uint16, np.uint32)
                        and (directory / TOKENS_FILE).stat().st_size == n_tokens * dtype.itemsize)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not complete:
            return None
        return cls(directory=directory, n_tokens=n_tokens, n_documents=int(meta["n_documents"]),
                   n_bytes=int(meta["n_bytes"]), dtype=dtype.name, tokenizer=meta["tokenizer"],
                   sources=meta["sources"], bad_lines=int(meta.get("bad_lines", 0)),
                   from_cache=from_cache)


def _document_stream(source: list[Path] | InMemoryDocuments, options: DataOptions,
                     stats: ReadStats) -> tuple[Iterator[tuple[str | None, int]], int]:
    """(document, bytes done) pairs and the total bytes, for progress reporting."""
    if isinstance(source, InMemoryDocuments):
        sizes = [len(doc.encode("utf-8")) for doc in source.documents]

        def generate() -> Iterator[tuple[str | None, int]]:
            done = 0
            for doc, size in zip(source.documents, sizes):
                done += size
                if doc.strip():
                    stats.documents += 1
                    yield doc, done
                else:
                    stats.empty_documents += 1
                    yield None, done
            if stats.documents == 0:
                raise UserError(f"{source.identity}: no text found; the corpus is empty")

        return generate(), sum(sizes)
    total = sum(path.stat().st_size for path in source)
    return _documents_with_progress(source, options, stats), total


def build_token_cache(source: str | Path | Sequence[str | Path] | InMemoryDocuments,
                      tokenizer: Tokenizer, options: DataOptions = DataOptions(),
                      cache_dir: str | Path | None = None, *,
                      progress: ProgressCallback | None = None,
                      num_threads: int | None = None) -> TokenShards:
    """Tokenize ``source`` once into ``cache_dir/<key>/``; later calls reuse it.

    ``source`` is a path spec (as ``expand_paths`` takes) or ``InMemoryDocuments``.
    The key covers each file's resolved path, size and mtime, the tokenizer, the
    options and the cache format, so editing a file or changing any of them
    builds a new cache. ``tokens.bin`` is written first and ``meta.json`` last,
    both atomically: a cache without a readable ``meta.json`` that agrees with
    the size of ``tokens.bin`` is rebuilt, never read.
    """
    files = source if isinstance(source, InMemoryDocuments) else expand_paths(source)
    signature = _source_signature(files)
    key = cache_key(signature, tokenizer, options)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = directory.expanduser() / key
    cached = TokenShards.open(directory)
    if cached is not None:
        return cached

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{directory}: cannot create the token cache ({err.strerror}); "
                        "set GEMMA_STUDIO_CACHE to a writable directory") from None
    # A stale meta.json must never describe the tokens about to be written.
    (directory / META_FILE).unlink(missing_ok=True)

    stats = ReadStats()
    stream, total_bytes = _document_stream(files, options, stats)
    dtype = token_dtype(tokenizer.n_vocab)
    threads = num_threads or max(1, min(8, os.cpu_count() or 1))

    try:
        counts = _write_tokens(directory / TOKENS_FILE, stream, total_bytes, tokenizer, options,
                               dtype, threads, progress)
    except BaseException:
        with contextlib.suppress(OSError):
            directory.rmdir()  # only succeeds when nothing else was ever stored there
        raise

    # A file edited while it was being read would leave tokens that match neither
    # version under the old key; refuse to label them.
    if not isinstance(files, InMemoryDocuments) and _source_signature(files) != signature:
        (directory / TOKENS_FILE).unlink(missing_ok=True)
        raise UserError(f"{files[0].parent}: a data file changed while it was being tokenized; "
                        "run again once it is finished")

    meta = {"format": CACHE_FORMAT_VERSION, "n_tokens": counts["tokens"],
            "n_documents": counts["documents"], "n_bytes": counts["bytes"], "dtype": dtype.name,
            "tokenizer": tokenizer.spec(), "options": asdict(options), "sources": signature,
            "bad_lines": stats.bad_lines, "empty_documents": stats.empty_documents}
    atomic.write_json(directory / META_FILE, meta)
    shards = TokenShards.open(directory, from_cache=False)
    assert shards is not None, "a cache just written must read back"
    return shards


def _write_tokens(path: Path, stream: Iterator[tuple[str | None, int]], total_bytes: int,
                  tokenizer: Tokenizer, options: DataOptions, dtype: np.dtype, threads: int,
                  progress: ProgressCallback | None) -> dict[str, int]:
    """Tokenize the stream batch by batch, appending ids to ``path`` atomically."""
    counts = {"tokens": 0, "documents": 0, "bytes": 0}
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as out:
        batch: list[str] = []
        batch_bytes = 0
        bytes_done = 0

        def flush() -> None:
            nonlocal batch, batch_bytes
            if not batch:
                return
            encoded = tokenizer.encode_batch(batch, num_threads=threads)
            pieces = []
            for ids in encoded:
                if counts["documents"] > 0 and options.add_eos_between_documents:
                    pieces.append(np.array([tokenizer.eos_id], dtype=dtype))
                pieces.append(np.asarray(ids, dtype=dtype))
                counts["documents"] += 1
            array = np.concatenate(pieces)
            out.write(array.tobytes())
            counts["tokens"] += len(array)
            counts["bytes"] += batch_bytes
            batch, batch_bytes = [], 0
            if progress is not None:
                progress(counts["documents"], bytes_done, total_bytes)

        for text, done in stream:
            bytes_done = done
            if text is None:
                continue
            batch.append(text)
            batch_bytes += len(text.encode("utf-8"))
            if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
                flush()
        flush()
        out.flush()
        os.fsync(out.fileno())
    if progress is not None:  # trailing blank or skipped lines still count as read
        progress(counts["documents"], total_bytes, total_bytes)
    return counts


# ---------------------------------------------------------------------- windows
class TokenWindows:
    """Fixed-length training windows over a token stream.

    Window ``i`` covers ``tokens[start : start + max_length + 1]``: the first
    ``max_length`` tokens are the inputs, the last ``max_length`` the targets.
    Starts are ``0, stride, 2*stride, ...``; when the last of those windows stops
    short of the end, one more window aligned to the very end is added, so the
    final tokens are trained on too (it overlaps its neighbour by a little).
    """

    def __init__(self, tokens: np.ndarray | TokenShards, max_length: int, stride: int | None = None,
                 name: str = "corpus"):
        if isinstance(tokens, TokenShards):
            tokens = tokens.tokens
        stride = max_length if stride is None else stride
        if max_length < 1:
            raise UserError(f"--max_length {max_length} must be at least 1")
        if not 1 <= stride <= max_length:
            raise UserError(f"--stride {stride} must be between 1 and --max_length ({max_length}); "
                            "a larger stride would skip tokens")
        n = len(tokens)
        if n < max_length + 1:
            fits = (f"use --max_length {n - 1} or less" if n >= 2
                    else "give more text")
            raise UserError(f"the {name} has only {n} tokens but a window of --max_length "
                            f"{max_length} needs {max_length + 1}; {fits}, or add more text")
        self.tokens = tokens
        self.max_length = max_length
        self.stride = stride
        self._last_start = n - (max_length + 1)
        self._n_regular = self._last_start // stride + 1
        self._has_tail = (self._n_regular - 1) * stride != self._last_start

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return self._n_regular + int(self._has_tail)

    def start(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range (0..{len(self) - 1})")
        return i * self.stride if i < self._n_regular else self._last_start

    def starts(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window indices out of range (0..{len(self) - 1})")
        return np.where(indices < self._n_regular, indices * self.stride, self._last_start)

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each ``max_length`` int64 ids."""
        s = self.start(i)
        chunk = torch.from_numpy(np.asarray(self.tokens[s:s + self.max_length + 1], dtype=np.int64))
        return chunk[:-1], chunk[1:]

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each of shape (len(indices), max_length), int64."""
        offsets = self.starts(indices)[:, None] + np.arange(self.max_length + 1)
        chunk = torch.from_numpy(np.asarray(self.tokens[offsets], dtype=np.int64))
        return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------------- batches
class TrainBatches:
    """Endless, shuffled, resumable training batches.

    Each epoch visits the windows in the order of ``torch.randperm`` seeded with
    ``seed + epoch``, so a run is reproducible and every epoch differs. An epoch
    is ``ceil(len(windows) / (batch_size * world_size))`` steps; the last step is
    filled up from the start of the same permutation, so no window is left out
    of any epoch and every batch is full.

    With several processes, step ``k`` takes the global batch
    ``order[k*B*W : (k+1)*B*W]`` (B = batch_size, W = world_size) and rank ``r``
    takes its ``r``-th block of ``B``: together the ranks see exactly the batch
    one process with ``batch_size = B*W`` sees at the same step.

    ``state_dict()`` names the next batch; ``load_state_dict`` continues from it.
    """

    def __init__(self, windows: TokenWindows, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise UserError(f"--train_batch_size {batch_size} must be at least 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # steps already taken in this epoch
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.windows) / self.global_batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            permutation = torch.randperm(len(self.windows), generator=generator).numpy()
            # Cyclic fill: the final step borrows windows from the epoch's start.
            self._order = np.resize(permutation, self.steps_per_epoch * self.global_batch_size)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def batch_indices(self, epoch: int, position: int) -> np.ndarray:
        """The window indices this rank trains on at step ``position`` of ``epoch``."""
        order = self._epoch_order(epoch)
        start = position * self.global_batch_size + self.rank * self.batch_size
        return order[start:start + self.batch_size]

    def __iter__(self) -> "TrainBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.batch_indices(self.epoch, self.position)
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return self.windows.batch(indices)

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position),
                "global_batch_size": int(self.global_batch_size)}

    def load_state_dict(self, state: dict) -> None:
        try:
            epoch, position = state["epoch"], state["position"]
        except (KeyError, TypeError):
            raise UserError(f"data loader state {state!r} lacks 'epoch' and 'position'; "
                            "the checkpoint is damaged") from None
        if not (isinstance(epoch, int) and isinstance(position, int) and epoch >= 0 and position >= 0):
            raise UserError(f"data loader state {state!r} is not two non-negative integers; "
                            "the checkpoint is damaged")
        # Resumed with another number of ranks (or batch): continue after the windows
        # already taken this epoch, rounding up to a whole batch of the new size.
        saved_batch = state.get("global_batch_size", self.global_batch_size)
        if isinstance(saved_batch, int) and saved_batch > 0 and saved_batch != self.global_batch_size:
            position = -(-position * saved_batch // self.global_batch_size)
        # A smaller corpus or a larger batch since the save: carry into later epochs.
        epoch += position // self.steps_per_epoch
        self.epoch, self.position = epoch, position % self.steps_per_epoch


def fixed_validation_batches(windows: TokenWindows | int, batch_size: int,
                             max_batches: int | None = None) -> list[list[int]]:
    """The window indices to evaluate, the same every time.

    All windows when ``max_batches`` is None or they fit in it; otherwise
    ``batch_size * max_batches`` windows spread evenly over the whole split, so
    the estimate covers every part of the text, not just its beginning.
    """
    if batch_size < 1:
        raise UserError(f"--train_batch_size {batch_size} must be at least 1")
    if max_batches is not None and max_batches < 1:
        raise UserError(f"the number of validation batches ({max_batches}) must be at least 1")
    n = windows if isinstance(windows, int) else len(windows)
    if max_batches is None or n <= batch_size * max_batches:
        chosen = list(range(n))
    else:
        k = batch_size * max_batches
        chosen = [i * n // k for i in range(k)]  # distinct because n > k
    return [chosen[i:i + batch_size] for i in range(0, len(chosen), batch_size)]


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


def prepare_datasets(train_path, val_path, test_path, tokenizer: Tokenizer,
                     options: DataOptions, max_length: int, stride: int | None,
                     val_fraction: float, cache_dir: str | Path | None = None,
                     progress: Callable[[str, int, int, int], None] | None = None) -> PreparedData:
    """Tokenize (or reuse) each split and cut it into windows.

    * no ``train_path``: the bundled Shakespeare corpus, split by work;
    * ``train_path`` only: the last ``val_fraction`` of its tokens is validation;
    * ``train_path`` and ``val_path``: each file set is its own split.

    Training windows use ``stride``; validation and test windows use
    ``stride = max_length`` so each token is scored once (the tail window aside).
    ``progress(split, docs_done, bytes_done, total_bytes)`` reports tokenization.
    """
    notes: list[str] = []

    def build(name: str, source) -> TokenShards:
        callback = None if progress is None else (lambda d, b, t: progress(name, d, b, t))
        shards = build_token_cache(source, tokenizer, options, cache_dir, progress=callback)
        if shards.bad_lines:
            notes.append(f"{name}: skipped {shards.bad_lines} bad JSONL lines")
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
        from gemma_core.corpus import training_works, validation_works

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
                      f"{train_path} (all but the last {percent} of tokens)", stride, False)
        val = split("val", tokens[cut:], shards, val_bytes,
                    f"{train_path} (last {percent} of tokens)", None, False)
    else:
        train_shards, val_shards = build("train", train_path), build("val", val_path)
        train = split("train", train_shards.tokens, train_shards, train_shards.n_bytes,
                      str(train_path), stride, True)
        val = split("val", val_shards.tokens, val_shards, val_shards.n_bytes,
                    str(val_path), None, True)

    test = None
    if test_path is not None:
        test_shards = build("test", test_path)
        test = split("test", test_shards.tokens, test_shards, test_shards.n_bytes,
                     str(test_path), None, True)
    return PreparedData(train=train, val=val, test=test, notes=notes)
