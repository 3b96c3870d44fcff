"""The bundled corpus: Shakespeare's complete works, shipped with the package.

Validation is split by work, so the text a model is validated on is text it
never trained on (and neither did the ``shakespeare-4k`` tokenizer).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib import resources

# About 9.5% of the characters: two plays, a history and the sonnets.
VALIDATION_WORKS = ("julius_caesar", "twelfth_night", "henry_v", "sonnets")


@dataclass(frozen=True)
class Work:
    id: str
    title: str
    text: str


def bundled_works() -> list[Work]:
    """All 42 works in a fixed order."""
    resource = resources.files("gemma_core.assets") / "shakespeare.jsonl.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return [Work(**json.loads(line)) for line in lines]


def training_works() -> list[Work]:
    return [w for w in bundled_works() if w.id not in VALIDATION_WORKS]


def validation_works() -> list[Work]:
    return [w for w in bundled_works() if w.id in VALIDATION_WORKS]
