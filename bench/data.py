"""Data: tokenization throughput (MB of text per second), and start to first optimizer step.

Tokenization is measured cold (a fresh cache directory each time) for the
bundled corpus and for a Wikipedia-like JSONL (long articles, one per line).
The reference is tiktoken's own single-threaded ``encode_ordinary`` over the same
documents. Start-to-first-step runs ``gemma-core train`` with a warm cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report
from gemma_core.data import DataOptions, InMemoryDocuments, build_token_cache
from gemma_core.data.corpus import bundled_works
from gemma_core.tokenizers.tokenizer import load_tokenizer


def wikipedia_like(folder: Path, n_articles: int) -> Path:
    """Articles of Wikipedia's length, in the seed's JSONL format, from the bundled text."""
    text = "\n".join(w.text for w in bundled_works())
    path = folder / "wiki.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_articles):
            start = (i * 7919) % (len(text) - 20_000)
            f.write(json.dumps({"id": str(i), "title": f"Article {i}", "text": text[start:start + 20_000]}) + "\n")
    return path


def tokenization(name: str, source, documents: list[str], tokenizer) -> dict:
    n_bytes = sum(len(d.encode("utf-8")) for d in documents)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        build_token_cache(source, tokenizer, DataOptions(), cache)
        ours = time.perf_counter() - start
    start = time.perf_counter()
    for document in documents:
        tokenizer.encoding.encode_ordinary(document)
    reference = time.perf_counter() - start
    return {"corpus": name, "megabytes": round(n_bytes / 1e6, 2),
            "ours_mb_per_s": round(n_bytes / 1e6 / ours, 2),
            "reference_mb_per_s": round(n_bytes / 1e6 / reference, 2), "ratio": round(reference / ours, 3)}


def start_to_first_step(cache: Path) -> float:
    """Seconds from launching ``gemma-core train --no-compile`` to its first log entry (warm cache)."""
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(cache))
    times = []
    for _ in range(2):  # the first run warms the cache
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            # --no-compile: this measures start-up and data loading, not the compiler.
            process = subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--output_dir", out,
                                        "--device", "cpu", "--no-compile"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=env)
            log = Path(out) / "training_log.jsonl"
            while not (log.exists() and log.stat().st_size > 0):
                time.sleep(0.01)
            times.append(time.perf_counter() - start)
            process.terminate()
            process.wait()
    return times[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench data", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller Wikipedia-like file")
    args = parser.parse_args(argv)
    results = []
    for tokenizer_name in ("shakespeare-4k", "gpt2"):
        tokenizer = load_tokenizer(tokenizer_name)
        works = [w.text for w in bundled_works()]
        result = tokenization("bundled Shakespeare", InMemoryDocuments("bench", works), works, tokenizer)
        result["tokenizer"] = tokenizer_name
        results.append(result)
        print(json.dumps(result), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        wiki = wikipedia_like(Path(folder), 300 if args.quick else 1500)
        documents = [json.loads(line)["text"] for line in wiki.read_text().splitlines()]
        result = tokenization("Wikipedia-like JSONL", wiki, documents, load_tokenizer("gpt2"))
        result["tokenizer"] = "gpt2"
        results.append(result)
        print(json.dumps(result), flush=True)
        first_step = start_to_first_step(Path(folder) / "cache")
    print(json.dumps({"start_to_first_step_s": round(first_step, 2)}), flush=True)
    report("data", {"tokenization": results, "start_to_first_step_s": round(first_step, 2),
                    "ratio": min(r["ratio"] for r in results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
