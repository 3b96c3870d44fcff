"""A run's logs and the seed's other outputs, written so a crash loses nothing.

Every step appends to ``training_log.jsonl`` (and every evaluation to
``validation_log.jsonl``): linear cost, and a crash tears at most the last line.
At checkpoints the seed's ``training_log.json`` and ``validation_log.json`` are
rewritten from those streams atomically, with ``loss_function.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gemma_core import atomic
from gemma_core.run.layout import LOSS_PLOT, SAMPLES, TRAIN_LOG, TRAIN_STREAM, VAL_LOG, VAL_STREAM, VOCAB
from gemma_core.tokenizers.byte_alphabet import bytes_to_unicode
from gemma_core.tokenizers.tokenizer import Tokenizer


class NoLog:
    """Where the logs of a rank other than 0 go: nowhere."""

    def append(self, entry: dict) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLog:
    """An append-only JSON-lines file; each entry is flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class RunLogs:
    """The three streams a training run appends to (rank 0 writes; other ranks get ``NoLog``s)."""

    def __init__(self, output_dir: Path | None) -> None:
        if output_dir is None:
            self.train: JsonlLog | NoLog = NoLog()
            self.val: JsonlLog | NoLog = NoLog()
            self.samples: JsonlLog | NoLog = NoLog()
        else:
            self.train = JsonlLog(output_dir / TRAIN_STREAM)
            self.val = JsonlLog(output_dir / VAL_STREAM)
            self.samples = JsonlLog(output_dir / SAMPLES)

    def sync(self) -> None:
        self.train.sync()
        self.val.sync()

    def close(self) -> None:
        for log in (self.train, self.val, self.samples):
            log.close()


def read_jsonl(path: Path) -> list[dict]:
    """Entries of a JSON-lines log; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def truncate_logs_to(output_dir: Path, step: int) -> None:
    """Keep log entries up to ``step``: steps after a checkpoint are replayed on resume."""
    for name in (TRAIN_STREAM, VAL_STREAM, SAMPLES):
        path = output_dir / name
        if path.exists():
            kept = [e for e in read_jsonl(path) if e.get("step", 0) <= step]
            atomic.write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


def write_seed_logs(output_dir: Path) -> None:
    """Rewrite the seed's JSON log files (valid JSON lists) from the streams."""
    atomic.write_json(output_dir / TRAIN_LOG, read_jsonl(output_dir / TRAIN_STREAM))
    atomic.write_json(output_dir / VAL_LOG, read_jsonl(output_dir / VAL_STREAM))


# --------------------------------------------------------------- vocab.json
def vocab_mapping(tokenizer: Tokenizer) -> dict[str, int]:
    """Every token as a distinct string: bytes through GPT-2's alphabet, specials verbatim."""
    alphabet = bytes_to_unicode()
    vocab: dict[str, int] = {}
    specials = {token_id: text for text, token_id in tokenizer.encoding._special_tokens.items()}
    for token_id in range(tokenizer.n_vocab):
        if token_id in specials:
            vocab[specials[token_id]] = token_id
            continue
        try:
            raw = tokenizer.token_bytes(token_id)
        except KeyError:  # a gap in the ranks
            continue
        vocab["".join(alphabet[b] for b in raw)] = token_id
    return vocab


def write_vocab(output_dir: Path, tokenizer: Tokenizer) -> None:
    atomic.write_text(output_dir / VOCAB,
                      json.dumps(vocab_mapping(tokenizer), ensure_ascii=False, indent=0) + "\n")


# ---------------------------------------------------------------- loss plot
def write_loss_plot(output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_jsonl(output_dir / TRAIN_STREAM)
    val = read_jsonl(output_dir / VAL_STREAM)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    if train:
        ax.plot([e["step"] for e in train], [e["train_loss"] for e in train],
                label="training loss", linewidth=0.8, alpha=0.8)
    if val:
        ax.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-",
                label="validation loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(output_dir / LOSS_PLOT) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_seed_outputs(output_dir: Path) -> None:
    """The seed's JSON logs and loss plot, brought up to date."""
    write_seed_logs(output_dir)
    write_loss_plot(output_dir)
