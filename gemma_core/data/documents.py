"""Reading documents: what the user typed (files, directories, globs) -> document texts.

``expand_paths`` turns paths into a sorted list of ``.jsonl``/``.txt`` files;
``iter_documents`` reads them as document strings, with one-line ``UserError``s
that name the file and line.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from gemma_core.errors import UserError

DOCUMENT_SUFFIXES = (".jsonl", ".txt")
GLOB_CHARS = "*?["

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
            path = Path(root) / name
            # Only regular files: reading a pipe or a device found in a folder would hang.
            if not name.startswith(".") and name.endswith(DOCUMENT_SUFFIXES) and path.is_file():
                found.append(path)
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
        elif path.exists():
            raise UserError(f"{path}: not a regular file (a pipe, socket or device); give .jsonl or "
                            ".txt files, or a directory of them")
        elif _has_glob(text):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                raise UserError(f"{text}: no files match this pattern; check the path")
            found = []
            for match in map(Path, matches):
                if match.is_dir():
                    found.extend(_usable_files_under(match))
                elif match.name.endswith(DOCUMENT_SUFFIXES) and match.is_file():
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

# A .txt file is read this many bytes at a time and its text handed on in pieces
# cut where tokenization would split anyway, so memory stays flat however large
# the file (a one-document corpus of several GB) and a stop request is seen
# between pieces.
TEXT_CHUNK_BYTES = 2 << 20


class Piece(NamedTuple):
    """Part of the document stream: text, the input bytes read so far, and whether it
    starts a new document (the rest of a document follows in later pieces).
    ``text`` None reports progress only."""

    text: str | None
    bytes_done: int
    new_document: bool


def safe_cut(text: str, start: int = 0) -> int:
    """The last index after ``start`` where ``text`` may be cut without changing its tokens.

    The split patterns of every tiktoken tokenizer here (GPT-2's and our own)
    end a piece at a line end that follows a visible character and precedes one
    (``...word.\nNext``), and before a space that follows a visible character and
    precedes a letter (``word word``); cutting there, each side tokenizes as the
    whole does. Line ends are preferred. Returns ``start`` when no such place exists.
    (Tokenizers without such a split pattern, as Gemma's own, may tokenize the few
    characters at a cut differently: a cut is then a line end, as between documents.)
    """
    for separator, fits in (("\n", lambda i: not text[i].isspace()),
                            (" ", lambda i: text[i].isalpha())):
        end = len(text) - 1
        while True:
            i = text.rfind(separator, start + 1, end)
            if i < 0:
                break
            before, after = i - 1, i + 1
            if not text[before].isspace() and fits(after):
                return after if separator == "\n" else i
            end = i
    return start


def _txt_text_chunks(path: Path) -> Iterator[tuple[str, int]]:
    """(text, bytes read so far), decoded a chunk at a time, each chunk ending at a raw
    newline (never inside a UTF-8 character); errors name the file and line."""
    with open(path, "rb") as f:
        carry = b""
        lines_before, read = 0, 0
        while True:
            block = f.read(TEXT_CHUNK_BYTES)
            read += len(block)
            raw = carry + block
            nul = raw.find(b"\0")
            if nul >= 0:  # a NUL byte never occurs in text: the file is binary (or UTF-16)
                raise _binary_error(path, raw, lines_before + raw.count(b"\n", 0, nul) + 1)
            if block:
                end = raw.rfind(b"\n") + 1
                if end == 0 and len(raw) <= MAX_LINE_BYTES:
                    carry = raw  # no line end yet: read on
                    continue
                if end == 0:
                    raise UserError(f"{path}:{lines_before + 1}: line is longer than "
                                    f"{MAX_LINE_BYTES:,} bytes; is this really a text file?")
                raw, carry = raw[:end], raw[end:]
            else:
                carry = b""
            if not raw:
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _utf8_error(path, raw, err, line=lines_before + raw.count(b"\n", 0, err.start) + 1) from None
            lines_before += raw.count(b"\n")
            yield text, read
            if not block:
                return


def _txt_pieces(path: Path, options: DataOptions) -> Iterator[tuple[str, int, bool]]:
    """(text, bytes read so far, starts a document) for a .txt file, a bounded piece at a time."""
    pending = ""  # decoded text not handed on yet
    first = True  # the next piece starts a document
    at_file_start = True
    for text, read in _txt_text_chunks(path):
        if at_file_start:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            at_file_start = False
        pending += text
        if options.split_on_blank_lines:
            # Whole blocks before the last blank-line separator are documents.
            # A separator at the very end may go on in the next chunk: wait for it.
            separators = [m for m in _BLANK_LINES.finditer(pending) if m.end() < len(pending)]
            if separators:
                last = separators[-1]
                complete, pending = pending[:last.start()], pending[last.end():]
                for i, block in enumerate(_BLANK_LINES.split(complete)):
                    starts = first or i > 0
                    yield (block.strip("\r\n") if starts else block.rstrip("\r\n")), read, starts
                    first = False
                first = True
        if len(pending) > TEXT_CHUNK_BYTES:  # a long document: hand on what is safe
            cut = safe_cut(pending, len(pending) // 2)
            if cut == len(pending) // 2 and len(pending) > MAX_LINE_BYTES:
                cut = pending.rfind("\n") + 1  # no clean cut in 256 MiB: a line end must do
            if cut > len(pending) // 2:
                piece, pending = pending[:cut], pending[cut:]
                yield (piece.lstrip("\r\n") if first and options.split_on_blank_lines else piece), read, first
                first = False
    if options.split_on_blank_lines:
        pending = pending.lstrip("\r\n") if first else pending
        pending = pending.rstrip("\r\n")
    yield pending, path.stat().st_size, first


def _document_pieces(paths: Sequence[Path], options: DataOptions, stats: ReadStats) -> Iterator[Piece]:
    """Every file's documents as pieces, in order; empty and whitespace-only documents
    are left out (and counted), and a corpus with no text at all is refused."""
    consumed = 0
    for path in paths:
        try:
            if path.suffix == ".jsonl":
                raw_pieces = ((text, n, True) for text, n in _jsonl_documents(path, options, stats))
                relative = True  # JSONL reports bytes per line; .txt reports bytes read so far
            else:
                raw_pieces = _txt_pieces(path, options)
                relative = False
            started = False  # the current document has shown some text
            held: list[str] = []  # its leading whitespace, until text arrives
            done = consumed
            for text, n, new_document in raw_pieces:
                done = done + n if relative else consumed + n
                if new_document:
                    if not started and any(held):
                        stats.empty_documents += 1
                    started, held = False, []
                if started:
                    yield Piece(text, done, False)
                elif text.strip():
                    started = True
                    stats.documents += 1
                    yield Piece("".join(held) + text, done, True)
                    held = []
                else:
                    held.append(text)
                    yield Piece(None, done, False)
            if not started and any(held):
                stats.empty_documents += 1
            consumed = done
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            raise UserError(f"{path}: cannot read ({err.strerror}); check the data path") from None
    if stats.documents == 0:
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more files"
        skipped = f" ({stats.bad_lines} bad lines skipped)" if stats.bad_lines else ""
        raise UserError(f"{where}: no text found{skipped}; the corpus is empty or whitespace only")


def _files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    files = expand_paths(paths)
    if not files:
        raise UserError("no data files given; pass a .jsonl or .txt file, a directory or a glob")
    return files


def iter_documents(paths: str | Path | Sequence[str | Path], options: DataOptions = DataOptions(),
                   stats: ReadStats | None = None) -> Iterator[str]:
    """Yield each document's text, in file order.

    ``.jsonl``: one JSON object per line, the text in ``options.text_field``;
    blank lines are ignored. ``.txt``: the whole file is one document, or each
    blank-line-separated block is one when ``options.split_on_blank_lines``.
    Empty and whitespace-only documents are skipped (counted in ``stats``).
    Raises ``UserError`` when nothing at all is left. A document is held whole in
    memory: to stream a large corpus, use ``iter_text``.
    """
    stats = stats if stats is not None else ReadStats()
    parts: list[str] = []
    for piece in _document_pieces(_files(paths), options, stats):
        if piece.text is None:
            continue
        if piece.new_document and parts:
            yield "".join(parts)
            parts = []
        parts.append(piece.text)
    if parts:
        yield "".join(parts)


def iter_text(paths: str | Path | Sequence[str | Path], options: DataOptions = DataOptions(),
              stats: ReadStats | None = None) -> Iterator[str]:
    """The corpus's text in bounded pieces, each cut where tokenization splits anyway:
    what training a tokenizer needs, in memory independent of the file sizes."""
    stats = stats if stats is not None else ReadStats()
    for piece in _document_pieces(_files(paths), options, stats):
        if piece.text:
            yield piece.text
