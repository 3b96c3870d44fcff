"""A run's logs and the seed's other outputs, written so a crash loses nothing.

Every step appends to ``training_log.jsonl`` (and every evaluation to
``validation_log.jsonl``): linear cost, and a crash tears at most the last line.
At checkpoints the seed's ``training_log.json`` is rewritten from its stream
atomically, with ``loss_function.png``; ``validation_log.json`` is rewritten after
every evaluation as well, so the two validation logs always agree.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gemma_core import atomic
from gemma_core.errors import DiskFull, UserError
from gemma_core.run.layout import LOSS_PLOT, SAMPLES, TRAIN_LOG, TRAIN_STREAM, VAL_LOG, VAL_STREAM, VOCAB
from gemma_core.tokenizers.byte_alphabet import bytes_to_unicode
from gemma_core.tokenizers.tokenizer import Tokenizer

T = TypeVar("T")


class NoLog:
    """Where the logs of a rank other than 0 go: nowhere."""

    def append(self, entry: dict) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLog:
    """An append-only JSON-lines file; each entry is written through as it comes.

    A write that runs out of space keeps what it could not write and raises
    ``DiskFull``; the next append or sync writes it first, so once space is
    freed nothing logged is lost (and a line is never written twice).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending = b""

    def append(self, entry: dict) -> None:
        self._pending += (json.dumps(entry) + "\n").encode("utf-8")
        self._write_pending()

    def _write_pending(self) -> None:
        while self._pending and self._fd is not None:
            try:
                written = os.write(self._fd, self._pending)
            except OSError as err:
                if not atomic.is_disk_full(err):
                    raise
                raise DiskFull(f"{self.path}: disk full while appending to it ({atomic.free_mib(self.path.parent):,.0f} "
                               "MiB free); nothing logged is lost: free some space to go on") from None
            self._pending = self._pending[written:]

    def sync(self) -> None:
        self._write_pending()
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self._write_pending()
        except DiskFull:
            pass  # what could not be written is replayed from the checkpoint on resume
        finally:
            os.close(self._fd)
            self._fd = None


class ValidationLog(JsonlLog):
    """``validation_log.jsonl`` with one entry a step, and the seed's ``validation_log.json``
    rewritten from it (atomically) after each entry, so the two always agree.

    A step is evaluated once: an evaluation asked for again at a step already logged
    (``gemma-core control DIR eval`` sent twice, or at a step the schedule evaluated)
    adds nothing.
    """

    def __init__(self, path: Path, seed_path: Path) -> None:
        self.entries = read_jsonl(path)  # one per evaluation: few enough to keep in memory
        super().__init__(path)
        self.seed_path = seed_path
        if seed_path.exists():  # resumed: the stream was cut back to the checkpoint's step
            atomic.write_json(seed_path, self.entries)

    def logged(self, step: int) -> bool:
        return any(entry.get("step") == step for entry in self.entries)

    def append(self, entry: dict) -> None:
        if self.logged(entry.get("step")):
            return
        self.entries.append(entry)
        super().append(entry)
        atomic.write_json(self.seed_path, self.entries)


class RunLogs:
    """The three streams a training run appends to (rank 0 writes; other ranks get ``NoLog``s)."""

    def __init__(self, output_dir: Path | None) -> None:
        if output_dir is None:
            self.train: JsonlLog | NoLog = NoLog()
            self.val: JsonlLog | NoLog = NoLog()
            self.samples: JsonlLog | NoLog = NoLog()
        else:
            self.train = JsonlLog(output_dir / TRAIN_STREAM)
            self.val = ValidationLog(output_dir / VAL_STREAM, output_dir / VAL_LOG)
            self.samples = JsonlLog(output_dir / SAMPLES)

    def sync(self) -> None:
        self.train.sync()
        self.val.sync()

    def close(self) -> None:
        for log in (self.train, self.val, self.samples):
            log.close()


def read_jsonl(path: Path) -> list[dict]:
    """Entries of a JSON-lines log (see ``numbered_entries``)."""
    return [entry for _, entry in numbered_entries(path)]


def read_shown_jsonl(path: Path, parse: Callable[[dict], T | None],
                     keep: int | None = None) -> tuple[list[T], int]:
    """The records of a JSON-lines file that is untrusted and only shown (samples, chat): each
    non-blank line that is a JSON object ``parse`` accepts (it returns None for one it does
    not); any other line is skipped and counted, never a reason to refuse the run. ``keep``:
    only the last that many. A missing file has none; another ``OSError`` is the caller's."""
    kept: deque[T] = deque(maxlen=keep)
    skipped = 0
    try:
        with open(path, "rb") as lines:
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    entry = None
                record = parse(entry) if isinstance(entry, dict) else None
                if record is None:
                    skipped += 1
                else:
                    kept.append(record)
    except FileNotFoundError:
        return [], 0
    return list(kept), skipped


def damaged_lines_note(path: Path, skipped: int) -> str | None:
    """What a reader of a shown file says about the lines it left out, if any."""
    return f"{path}: {skipped:,} damaged line{'s' if skipped != 1 else ''} left out" if skipped else None


def numbered_entries(path: Path) -> list[tuple[int, dict]]:
    """(line number, entry) for each entry of a JSON-lines log.

    A torn last line (a crash in the middle of a write) is left out; any other
    line that is not a JSON object is damage, reported with the file and line.
    """
    if not path.exists():
        return []
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    lines = raw.split(b"\n")
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            entry = None
        if isinstance(entry, dict):
            entries.append((number, entry))
        elif number < len(lines) - 1 or raw.endswith(b"\n"):  # not a torn last line
            raise UserError(f"{path}:{number}: damaged log line (not a JSON object); delete the line "
                            "or restore the file")
    return entries


def truncate_logs_to(output_dir: Path, step: int, saved_entries: dict | None = None) -> None:
    """Keep log entries up to ``step``: steps after a checkpoint are replayed on resume.

    ``saved_entries`` (stream name -> entry) are the checkpoint's own copies of its
    step's last entries: one the log lost (a torn last line) is put back, so resuming
    never leaves a step missing.
    """
    saved_entries = saved_entries or {}
    for name in (TRAIN_STREAM, VAL_STREAM, SAMPLES):
        path = output_dir / name
        if path.exists() or name in saved_entries:
            kept = []
            for line, entry in numbered_entries(path):
                if not isinstance(entry.get("step"), int) or isinstance(entry["step"], bool):
                    raise UserError(f"{path}:{line}: damaged log line: 'step' is {entry.get('step')!r}, "
                                    "expected a whole number; delete the line or restore the file")
                if entry["step"] <= step:
                    kept.append(entry)
            saved = saved_entries.get(name)
            if (isinstance(saved, dict) and saved.get("step") == step
                    and not any(entry["step"] == step for entry in kept)):
                kept.append(saved)
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

    def plotted(entries: list[dict], key: str) -> list[dict]:  # lines with the numbers to plot
        return [e for e in entries if all(isinstance(e.get(k), (int, float)) and not isinstance(e.get(k), bool)
                                          for k in ("step", key))]

    train = plotted(read_jsonl(output_dir / TRAIN_STREAM), "train_loss")
    val = plotted(read_jsonl(output_dir / VAL_STREAM), "val_loss")
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
    if ax.get_legend_handles_labels()[0]:  # a run stopped before its first step has no curves yet
        ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(output_dir / LOSS_PLOT) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_seed_outputs(output_dir: Path) -> None:
    """The seed's JSON logs and loss plot, brought up to date."""
    write_seed_logs(output_dir)
    write_loss_plot(output_dir)
