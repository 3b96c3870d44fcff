"""Export the original project's Wikipedia sample as JSONL files.

The original project trained on Hugging Face's ``wikimedia/wikipedia``
(config ``20231101.en``): the first 10,000 articles for training, the next
1,000 for validation and articles 81,000-81,999 for testing. This module writes
that sample (or the same layout with other sizes) as ``train.jsonl``,
``val.jsonl`` and ``test.jsonl``, ready for ``--train_path``/``--val_path``.

It needs the optional ``datasets`` package and network access to Hugging Face;
everything else in the project works offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from gemma_core import atomic
from gemma_core.errors import UserError

DATASET = "wikimedia/wikipedia"
CONFIG = "20231101.en"
TEST_START = 81_000  # where the original project's test articles begin
KEPT_FIELDS = ("id", "title", "text")


@dataclass(frozen=True)
class ExportedSplit:
    name: str
    path: Path
    n_documents: int
    split: str  # the Hugging Face split expression it came from


def wikipedia_splits(n_train: int = 10_000, n_val: int = 1_000, n_test: int = 1_000) -> dict[str, str]:
    """The Hugging Face split expression of each file, as the original project chose them."""
    for option, value in (("--train", n_train), ("--val", n_val), ("--test", n_test)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{option} {value} must be a whole number of at least 1")
    if n_train + n_val > TEST_START:
        raise UserError(f"--train {n_train} plus --val {n_val} exceeds {TEST_START}, where "
                        "the test articles start; lower them so the splits do not overlap")
    return {"train": f"train[:{n_train}]",
            "val": f"train[{n_train}:{n_train + n_val}]",
            "test": f"train[{TEST_START}:{TEST_START + n_test}]"}


def _default_loader() -> Callable[..., Any]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("exporting Wikipedia needs the optional extra: "
                        "pip install 'gemma-studio[wikipedia]'") from None
    return load_dataset


def _is_network_error(err: BaseException) -> bool:
    """Connection failures, whichever HTTP library (requests, httpx, urllib) raised them."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        names = " ".join(cls.__name__ for cls in type(err).__mro__)
        if any(word in names for word in ("Connect", "Timeout", "Network", "Offline")):
            return True
        err = err.__cause__ or err.__context__
    return False


def _rows(load_dataset: Callable[..., Any], split: str) -> list[dict]:
    try:
        return list(load_dataset(DATASET, CONFIG, split=split))
    except UserError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        if _is_network_error(err) or isinstance(err, OSError):
            raise UserError(f"{DATASET} ({CONFIG}) could not be downloaded ({type(err).__name__}: "
                            f"{detail}); exporting Wikipedia needs network access to Hugging "
                            "Face (huggingface.co)") from None
        raise


def _jsonl_lines(rows: Iterable[dict], split: str) -> Iterable[str]:
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UserError(f"{DATASET} {split}: row {number} has no text; the dataset's layout "
                            "changed, so this export cannot use it")
        kept = {key: row[key] for key in KEPT_FIELDS if key in row}
        yield json.dumps(kept, ensure_ascii=False) + "\n"


def export_wikipedia(output_dir: str | Path, n_train: int = 10_000, n_val: int = 1_000,
                     n_test: int = 1_000,
                     load_dataset: Callable[..., Any] | None = None) -> list[ExportedSplit]:
    """Write ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` into ``output_dir``.

    ``load_dataset`` defaults to ``datasets.load_dataset``; it is called as
    ``load_dataset("wikimedia/wikipedia", "20231101.en", split=...)`` and must
    return an iterable of rows with at least ``"text"``. Every split is fetched
    before any file is written, and each file is written atomically, so a
    failed download leaves the directory as it was.
    """
    splits = wikipedia_splits(n_train, n_val, n_test)
    loader = load_dataset if load_dataset is not None else _default_loader()
    fetched = {name: _rows(loader, split) for name, split in splits.items()}

    output_dir = Path(output_dir).expanduser()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{output_dir}: cannot create the output directory ({err.strerror})") from None
    exported = []
    for name, rows in fetched.items():
        path = output_dir / f"{name}.jsonl"
        lines = list(_jsonl_lines(rows, splits[name]))
        with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        exported.append(ExportedSplit(name=name, path=path, n_documents=len(lines),
                                      split=splits[name]))
    return exported
