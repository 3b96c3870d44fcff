"""What the studio remembers between launches: theme, chart smoothing, chat settings, whether
the chat's tokens are shaded by probability, and whether to notify outside the app (bell,
desktop notification) when a run needs attention.

Kept in the user's configuration folder (``platformdirs``: ``~/.config/gemma-studio`` on
Linux), never in a run folder: a run's files describe the run, not how someone watched
it. A preferences file that cannot be read is set aside for the defaults, with a notice;
it never stops the studio.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from gemma_core.atomic import write_json

FILE_NAME = "studio.json"


def preferences_path() -> Path:
    return platformdirs.user_config_path("gemma-studio") / FILE_NAME


@dataclass
class Preferences:
    theme: str | None = None
    smoothing: float | None = None
    chat: dict[str, str] = field(default_factory=dict)  # the chat settings fields' text, by field id
    notifications: bool = True  # a run's end or divergence rings the bell / shows an OSC 9 notification
    token_probabilities: bool = False  # the chat's replies shaded by the model's probability per token (u)

    @classmethod
    def load(cls, path: Path | None = None) -> tuple["Preferences", str | None]:
        """The saved preferences (defaults when there are none), and a notice when the file
        could not be used."""
        path = path or preferences_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(), None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return cls(), f"Saved studio settings not read ({path}: {err}); using the defaults."
        if not isinstance(data, dict):
            return cls(), f"Saved studio settings not read ({path}: not a JSON object); using the defaults."
        theme, smoothing, chat = data.get("theme"), data.get("smoothing"), data.get("chat")
        notifications = data.get("notifications", True)
        token_probabilities = data.get("token_probabilities", False)
        return cls(
            theme=theme if isinstance(theme, str) else None,
            smoothing=float(smoothing) if isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool)
            and math.isfinite(smoothing) else None,
            chat={k: v for k, v in chat.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(chat, dict) else {},
            notifications=notifications if isinstance(notifications, bool) else True,
            token_probabilities=token_probabilities if isinstance(token_probabilities, bool) else False), None

    def save(self, path: Path | None = None) -> str | None:
        """Write them (atomically); returns a notice when that was not possible."""
        path = path or preferences_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, asdict(self))
        except OSError as err:
            return f"Studio settings not saved ({path}: {err.strerror or err})."
        return None
