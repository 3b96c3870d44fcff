"""Large corpora: a .txt file is read and tokenized in pieces, with the same tokens as whole,
in memory that does not grow with the file, and a stop request is obeyed within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from gemma_core.data import documents
from gemma_core.data.corpus import bundled_works
from gemma_core.data.documents import DataOptions, iter_documents, safe_cut
from gemma_core.data.token_cache import build_token_cache
from gemma_core.errors import Cancelled
from gemma_core.tokenizers.tokenizer import load_tokenizer

TRICKY = ("Line one.\nLine two  \n  indented\n\n\nAfter blanks.\r\nWindows line\r\n"
          "naïve café\u00a0\nnbsp before the line end\n東京 and 😀\n" "word " * 50 + "\n"
          "x.\n\nY\n'tis\n123 456\n\ttab\n")


@pytest.mark.parametrize("name", ["gpt2", "shakespeare-4k"])
def test_pieces_tokenize_exactly_as_the_whole_text(tmp_path, monkeypatch, name):
    tokenizer = load_tokenizer(name)
    text = "".join(w.text for w in bundled_works()[:3])[:300_000] + TRICKY * 40
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    whole = tokenizer.encode(text)
    monkeypatch.setattr(documents, "TEXT_CHUNK_BYTES", 3000)  # hundreds of cuts
    pieces = list(documents.iter_text(path))
    assert len(pieces) > 50 and "".join(pieces) == text
    assert [i for piece in pieces for i in tokenizer.encode(piece)] == whole
    shards = build_token_cache(path, tokenizer, cache_dir=tmp_path / "cache")
    assert shards.tokens.tolist() == whole


def test_a_safe_cut_falls_where_both_sides_split_anyway():
    assert safe_cut("abc.\nNext", 0) == len("abc.\n")
    assert safe_cut("abc  \n  next", 0) == 0  # whitespace on either side: no clean cut
    assert safe_cut("some words here", 0) == len("some words")  # before a space and a letter


def test_blank_line_documents_survive_chunking(tmp_path, monkeypatch):
    blocks = [f"Block {i}\nsecond line of {i}" for i in range(400)]
    path = tmp_path / "blocks.txt"
    path.write_text("\n\n  \n".join(blocks) + "\n", encoding="utf-8")
    expected = list(iter_documents([path], DataOptions(split_on_blank_lines=True)))
    monkeypatch.setattr(documents, "TEXT_CHUNK_BYTES", 500)
    assert list(iter_documents([path], DataOptions(split_on_blank_lines=True))) == expected == blocks


MEASURE = """
import json, resource, sys
from gemma_core.data.token_cache import build_token_cache
from gemma_core.tokenizers.tokenizer import load_tokenizer
tokenizer = load_tokenizer("gpt2")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shards = build_token_cache(sys.argv[1], tokenizer, cache_dir=sys.argv[2])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (after - before) / 1024, "tokens": shards.n_tokens}))
"""


def test_memory_does_not_grow_with_the_size_of_a_text_file(tmp_path):
    text = "".join(w.text for w in bundled_works())  # about 5 MB
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(8):  # about 40 MB of one document
            f.write(text)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout)
    assert measured["tokens"] > 8_000_000
    # Read whole, the text, its bytes and the token list would take over 400 MiB.
    assert measured["growth_mib"] < 120, measured


def test_a_stop_request_reaches_tokenization_within_a_second(tmp_path):
    path = tmp_path / "big.txt"
    text = "".join(w.text for w in bundled_works())
    path.write_text(text * 6, encoding="utf-8")  # about 30 MB: several seconds of tokenizing
    cancel = threading.Event()
    stopped_at: list[float] = []
    started = threading.Event()

    def progress(docs, done, total):
        started.set()

    def build():
        try:
            build_token_cache(path, load_tokenizer("gpt2"), cache_dir=tmp_path / "cache",
                              progress=progress, cancel=cancel)
        except Cancelled:
            stopped_at.append(time.monotonic())

    worker = threading.Thread(target=build)
    worker.start()
    assert started.wait(60)
    asked = time.monotonic()
    cancel.set()
    worker.join(30)
    assert stopped_at and stopped_at[0] - asked < 1.0
    assert not any((tmp_path / "cache").rglob("meta.json"))  # nothing half-built is kept as a cache
