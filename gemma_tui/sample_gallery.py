"""What the model wrote over its training, as one list: the run's ``--sample_prompt``
continuations (from its snapshot) and the chat replies (from its ``chat.jsonl``), each with
the step whose weights wrote it. The Samples screen shows this list; the same prompt at
successive steps is how a user sees the text improve.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable

from gemma_core.run.events import SampleProduced

SAMPLE, CHAT = "sample", "chat"
CHATS_SHOWN = 200  # the newest exchanges of the transcript the gallery reads


@dataclass(frozen=True)
class GalleryEntry:
    source: str  # SAMPLE (the run's --sample_prompt) or CHAT (a reply in the studio)
    step: int | None  # the optimizer step whose weights wrote it (None: a transcript line without one)
    prompt: str
    text: str  # what the model wrote after the prompt
    ended: str = ""  # a chat reply that did not end by itself: "cut", "cancelled" or "failed"


def _chat_entry(record: dict) -> GalleryEntry:
    step = record.get("step")
    ended = record.get("ended")
    return GalleryEntry(CHAT, step if isinstance(step, int) and not isinstance(step, bool) else None,
                        record["prompt"], record["reply"],
                        ended if ended in ("cut", "cancelled", "failed") else "")


def gallery_entries(samples: Iterable[SampleProduced], chat_records: Iterable[dict]) -> list[GalleryEntry]:
    """Every sample and chat reply, oldest step first; at one step, the samples (in the order
    their prompts were given), then the replies (in the order they were asked)."""
    entries = [GalleryEntry(SAMPLE, s.step, s.prompt, s.text) for s in samples]
    entries += [_chat_entry(record) for record in chat_records]
    # sorted() is stable: within a step and a source, the order they came in is kept.
    return sorted(entries, key=lambda e: (-1 if e.step is None else e.step, e.source != SAMPLE))


def same_prompt(entries: list[GalleryEntry], entry: GalleryEntry) -> list[GalleryEntry]:
    """What the model wrote after ``entry``'s prompt at every step in the list, oldest first
    (samples and chat replies alike): the text improving, in sequence."""
    return [other for other in entries if other.prompt == entry.prompt]
