"""The token cache: documents tokenized ONCE into a flat token file, memory-mapped after.

``build_token_cache`` writes ``tokens.bin`` (``uint16`` or ``uint32``) and ``meta.json``
under a key derived from the inputs, the tokenizer and the options; later runs
open it as ``TokenShards`` without tokenizing again.

Token stream layout: ``doc1 EOS doc2 EOS ... docN``. The EOS token separates
documents (the seed's behaviour); none precedes the first document and none
ends the corpus, so a corpus of one document holds no EOS at all. With a
tokenizer that has a beginning-of-text token (Gemma's ``<bos>``), every
document starts with it: ``BOS doc1 EOS BOS doc2 ... BOS docN``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from gemma_core import atomic
from gemma_core.data.documents import DataOptions, Piece, ReadStats, _document_pieces, expand_paths
from gemma_core.errors import Cancelled, UserError
from gemma_core.folder_lock import FolderLock
from gemma_core.tokenizers.tokenizer import Tokenizer, file_sha256

# Bump whenever the bytes in tokens.bin or the meaning of meta.json change, so
# caches written by an older version are rebuilt instead of misread.
CACHE_FORMAT_VERSION = 1
TOKENS_FILE = "tokens.bin"
META_FILE = "meta.json"

# Documents are tokenized in batches this large (whichever limit comes first):
# big enough for tiktoken's threads to pay off, small enough to keep memory flat and
# to see a stop request within half a second (tiktoken encodes about 8 MB/s here).
BATCH_DOCUMENTS = 1024
BATCH_BYTES = 2 << 20

ProgressCallback = Callable[[int, int, int], None]  # (docs_done, bytes_done, total_bytes)
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
    repaired: str | None = None  # why a damaged cache in its place was rebuilt

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
        """The cache in ``directory``, or None when it is missing, old, half-built or damaged."""
        shards, _ = cls.inspect(directory, from_cache)
        return shards

    @classmethod
    def inspect(cls, directory: Path, from_cache: bool = True) -> tuple["TokenShards | None", str | None]:
        """(the cache, None) when it is sound; (None, why) when a cache there is damaged;
        (None, None) when there is none, or only an old or unfinished one."""
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            n_tokens = int(meta["n_tokens"])
            complete = (meta.get("format") == CACHE_FORMAT_VERSION and n_tokens > 0
                        and dtype in (np.uint16, np.uint32)
                        and (directory / TOKENS_FILE).stat().st_size == n_tokens * dtype.itemsize)
            shards = cls(directory=directory, n_tokens=n_tokens, n_documents=int(meta["n_documents"]),
                         n_bytes=int(meta["n_bytes"]), dtype=dtype.name, tokenizer=dict(meta["tokenizer"]),
                         sources=list(meta["sources"]), bad_lines=int(meta.get("bad_lines", 0)),
                         from_cache=from_cache)
            n_vocab = int(shards.tokenizer["n_vocab"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        if not complete:
            return None, None
        largest = _largest_id(shards.tokens)
        if largest >= n_vocab:
            return None, f"token id {largest} is beyond the tokenizer's {n_vocab:,}"
        expected = meta.get("sample_sha256")
        if expected is not None and expected != sample_digest(shards.tokens):
            return None, "its tokens do not match the checksum it was written with"
        return shards, None


def _largest_id(tokens: np.ndarray) -> int:
    largest = 0
    for start in range(0, len(tokens), 1 << 26):  # chunks keep memory flat on huge corpora
        largest = max(largest, int(np.max(tokens[start:start + (1 << 26)])))
    return largest


SAMPLE_BLOCKS = 64  # token blocks hashed, spread evenly over a token stream
SAMPLE_BLOCK = 1024  # tokens per block


def sample_digest(tokens: np.ndarray) -> str:
    """sha256 of the length and a fixed sample of a token stream: cheap for any corpus
    size, and for a damaged or different stream different in practice."""
    n = len(tokens)
    digest = hashlib.sha256(n.to_bytes(8, "little"))
    for i in range(SAMPLE_BLOCKS):
        start = i * max(0, n - SAMPLE_BLOCK) // max(1, SAMPLE_BLOCKS - 1)
        digest.update(np.asarray(tokens[start:start + SAMPLE_BLOCK], dtype=np.int64).tobytes())
    return digest.hexdigest()


def _document_stream(source: list[Path] | InMemoryDocuments, options: DataOptions,
                     stats: ReadStats) -> tuple[Iterator[Piece], int]:
    """The pieces of every document and the total input bytes, for progress reporting."""
    if isinstance(source, InMemoryDocuments):
        sizes = [len(doc.encode("utf-8")) for doc in source.documents]

        def generate() -> Iterator[Piece]:
            done = 0
            for doc, size in zip(source.documents, sizes):
                done += size
                if doc.strip():
                    stats.documents += 1
                    yield Piece(doc, done, True)
                else:
                    stats.empty_documents += 1
                    yield Piece(None, done, False)
            if stats.documents == 0:
                raise UserError(f"{source.identity}: no text found; the corpus is empty")

        return generate(), sum(sizes)
    total = sum(path.stat().st_size for path in source)
    return _document_pieces(source, options, stats), total


def build_token_cache(source: str | Path | Sequence[str | Path] | InMemoryDocuments,
                      tokenizer: Tokenizer, options: DataOptions = DataOptions(),
                      cache_dir: str | Path | None = None, *,
                      progress: ProgressCallback | None = None,
                      num_threads: int | None = None,
                      cancel: threading.Event | None = None) -> TokenShards:
    """Tokenize ``source`` once into ``cache_dir/<key>/``; later calls reuse it.

    ``source`` is a path spec (as ``expand_paths`` takes) or ``InMemoryDocuments``.
    The key covers each file's resolved path, size and mtime, the tokenizer, the
    options and the cache format, so editing a file or changing any of them
    builds a new cache. ``tokens.bin`` is written first and ``meta.json`` last,
    both atomically: a cache without a readable ``meta.json`` that agrees with
    the size of ``tokens.bin`` is rebuilt, never read. Setting ``cancel`` stops
    the work between two batches (raising ``Cancelled``) and stores nothing.
    """
    files = source if isinstance(source, InMemoryDocuments) else expand_paths(source)
    signature = _source_signature(files)
    key = cache_key(signature, tokenizer, options)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = directory.expanduser() / key
    cached = TokenShards.open(directory)
    if cached is not None:
        return cached
    # One builder at a time: a second run tokenizing the same corpus waits, then reads
    # the cache the first one built.
    lock = FolderLock(directory, "token cache build")
    try:
        lock.acquire(wait=True, cancel=cancel)
    except UserError as err:
        raise UserError(f"{err}; set GEMMA_STUDIO_CACHE or --cache_dir to a writable directory") from None
    try:
        cached, damage = TokenShards.inspect(directory)
        if cached is not None:
            return cached
        shards = _build(directory, files, signature, tokenizer, options, progress, num_threads, cancel)
    except BaseException:
        lock.release(remove_if_unused=True)  # a cancelled or failed first build leaves no folder
        raise
    lock.release()
    return dataclasses.replace(shards, repaired=damage) if damage else shards


def _build(directory: Path, files, signature: list[dict], tokenizer: Tokenizer, options: DataOptions,
           progress: ProgressCallback | None, num_threads: int | None,
           cancel: threading.Event | None) -> TokenShards:
    """Tokenize into ``directory`` (its lock held)."""
    atomic.remove_leftovers(directory)  # from a build that was killed
    # A stale meta.json must never describe the tokens about to be written.
    (directory / META_FILE).unlink(missing_ok=True)

    stats = ReadStats()
    stream, total_bytes = _document_stream(files, options, stats)
    dtype = token_dtype(tokenizer.n_vocab)
    threads = num_threads or max(1, min(8, os.cpu_count() or 1))
    counts = _write_tokens(directory / TOKENS_FILE, stream, total_bytes, tokenizer, options,
                           dtype, threads, progress, cancel)

    # A file edited while it was being read would leave tokens that match neither
    # version under the old key; refuse to label them.
    if not isinstance(files, InMemoryDocuments) and _source_signature(files) != signature:
        (directory / TOKENS_FILE).unlink(missing_ok=True)
        raise UserError(f"{files[0].parent}: a data file changed while it was being tokenized; "
                        "run again once it is finished")

    tokens = np.memmap(directory / TOKENS_FILE, dtype=dtype, mode="r", shape=(counts["tokens"],))
    meta = {"format": CACHE_FORMAT_VERSION, "n_tokens": counts["tokens"],
            "n_documents": counts["documents"], "n_bytes": counts["bytes"], "dtype": dtype.name,
            "tokenizer": tokenizer.spec(), "options": asdict(options), "sources": signature,
            "bad_lines": stats.bad_lines, "empty_documents": stats.empty_documents,
            "sample_sha256": sample_digest(tokens)}
    del tokens
    atomic.write_json(directory / META_FILE, meta)
    shards = TokenShards.open(directory, from_cache=False)
    assert shards is not None, "a cache just written must read back"
    return shards


def _write_tokens(path: Path, stream: Iterator[Piece], total_bytes: int, tokenizer: Tokenizer,
                  options: DataOptions, dtype: np.dtype, threads: int,
                  progress: ProgressCallback | None, cancel: threading.Event | None) -> dict[str, int]:
    """Tokenize the stream batch by batch, appending ids to ``path`` atomically.

    Each document starts with BOS where the tokenizer has one (Gemma's), and
    documents are separated by EOS unless told otherwise.
    """
    counts = {"tokens": 0, "documents": 0, "bytes": 0}
    starts = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    between = [tokenizer.eos_id] if options.add_eos_between_documents else []
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as out:
        batch: list[str] = []
        prefixes: list[list[int]] = []  # the ids each text of the batch comes after
        batch_bytes = 0
        bytes_done = 0

        def flush() -> None:
            nonlocal batch, prefixes, batch_bytes
            if not batch:
                return
            encoded = tokenizer.encode_batch(batch, num_threads=threads)
            pieces = []
            for prefix, ids in zip(prefixes, encoded):
                if prefix:
                    pieces.append(np.asarray(prefix, dtype=dtype))
                pieces.append(np.asarray(ids, dtype=dtype))
            array = np.concatenate(pieces)
            out.write(array.tobytes())
            counts["tokens"] += len(array)
            counts["bytes"] += batch_bytes
            batch, prefixes, batch_bytes = [], [], 0
            if progress is not None:
                progress(counts["documents"], bytes_done, total_bytes)

        for piece in stream:
            if cancel is not None and cancel.is_set():
                raise Cancelled("stopped while tokenizing")
            bytes_done = piece.bytes_done
            if piece.text is None:
                continue
            prefix: list[int] = []
            if piece.new_document:
                prefix = (between if counts["documents"] else []) + starts
                counts["documents"] += 1
            size = len(piece.text.encode("utf-8"))
            if len(batch) >= BATCH_DOCUMENTS or batch_bytes + size > BATCH_BYTES:
                flush()
            batch.append(piece.text)
            prefixes.append(prefix)
            batch_bytes += size
        flush()
        out.flush()
        os.fsync(out.fileno())
    if progress is not None:  # trailing blank or skipped lines still count as read
        progress(counts["documents"], total_bytes, total_bytes)
    return counts
