"""Keep untrusted text (model output, dataset text) from steering the terminal."""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and C1 controls (which include CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with escape and control characters removed (tabs and newlines kept)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))
