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
