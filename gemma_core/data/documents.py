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
from typing import Iterator, Sequence

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


