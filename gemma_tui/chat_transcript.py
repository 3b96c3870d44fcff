"""The chat transcript kept in the run folder: ``chat.jsonl``, one finished exchange a line.

Each line holds the prompt, the reply as shown, the step whose weights answered, the
sampling settings and how the reply ended, so what the model said at a point of its
training can be read again later (``gemma-tui open`` or any JSON reader). Lines are
appended whole (one ``write`` of one line to a file opened for appending), so two studios
attached to one run never interleave halves of lines.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from gemma_core.run.layout import CHAT_TRANSCRIPT
from gemma_core.run.logs import damaged_lines_note, read_shown_jsonl
from gemma_tui.widgets.chat_exchange import ChatExchange


def transcript_record(exchange: ChatExchange) -> dict:
    job = exchange.job
    return {
        "time": time.time(),
        "step": job.step if job is not None else None,
        "prompt": exchange.prompt,
        "reply": exchange.reply,
        "settings": asdict(exchange.params),
        "ended": ("cancelled" if exchange.cancel_requested else
                  "failed" if exchange.status.startswith("failed") else
                  ("cut" if exchange.cut else "complete")),
        "note": exchange.status,
    }


def append_to_transcript(output_dir: str | Path, exchange: ChatExchange) -> str | None:
    """Add ``exchange`` to the run's transcript; returns why not, if it could not be written."""
    path = Path(output_dir) / CHAT_TRANSCRIPT
    line = (json.dumps(transcript_record(exchange), ensure_ascii=False, allow_nan=False) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except (OSError, ValueError) as err:
        return f"{path}: {getattr(err, 'strerror', None) or err}"
    return None


EARLIER_SHOWN = 20  # the newest exchanges a studio shows when it opens or attaches to a run


def read_transcript(output_dir: str | Path, limit: int = EARLIER_SHOWN) -> tuple[list[dict], str | None]:
    """The run's last ``limit`` exchanges (oldest first), and a note on what was left out:
    lines that are not whole exchanges (a torn last line, a damaged one) are skipped and
    counted, never shown half-read."""
    path = Path(output_dir) / CHAT_TRANSCRIPT
    try:
        kept, skipped = read_shown_jsonl(path, _exchange, keep=limit)
    except OSError as err:
        return [], f"{path}: cannot read ({err.strerror})"
    return kept, damaged_lines_note(path, skipped)


def _exchange(record: dict) -> dict | None:
    """A whole exchange: its prompt and reply are text."""
    return record if isinstance(record.get("prompt"), str) and isinstance(record.get("reply"), str) else None


def earlier_exchange_text(record: dict):
    """One exchange from the transcript as the chat pane shows it (untrusted text: printable
    only, never markup), marked as from earlier."""
    from rich.text import Text

    from gemma_core.safe_text import printable

    step = record.get("step")
    text = Text()
    text.append("you › ", style="bold")
    text.append(printable(record["prompt"]))
    text.append("\n")
    text.append(f"model @ step {step:,} › " if isinstance(step, int) and not isinstance(step, bool)
                else "model › ", style="bold")
    text.append(printable(record["prompt"]), style="dim")
    text.append(printable(record["reply"]))
    ended = record.get("ended")
    if ended in ("cut", "cancelled", "failed"):
        text.append(f"  [{ended}]", style="italic dim")
    text.append("  (earlier)", style="italic dim")
    return text
