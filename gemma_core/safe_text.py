"""Keep untrusted text (model output, dataset text) from steering the terminal."""

from __future__ import annotations

import re

from gemma_core.errors import UserError

# C0 controls except tab and newline, DEL, and C1 controls (which include CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with escape and control characters removed (tabs and newlines kept)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """Text for a one-line message: control characters shown as escapes (a newline in a
    file name is ``\\n``), so the line stays one line and steers nothing."""
    return _ANY_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def require_utf8(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode: bytes a terminal passed undecoded (shown by
    Python as lone surrogates), which no tokenizer can encode faithfully."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        shown = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"U+{ord(bad):04X}"
        raise UserError(f"{what} is not valid UTF-8 text ({shown} at character {err.start}); "
                        "give it as UTF-8") from None
