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
        # The datasets library (or the dataset) failed, not this program: say so in one line.
        raise UserError(f"{DATASET} ({CONFIG}) {split}: the datasets library could not load it "
                        f"({type(err).__name__}: {detail}); check the installed datasets version "
                        "(pip install -U datasets)") from None


def _jsonl_lines(rows: Iterable[dict], split: str) -> Iterable[str]:
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UserError(f"{DATASET} {split}: row {number} has no text; the dataset's layout "
                            "changed, so this export cannot use it")
        kept = {key: row[key] for key in KEPT_FIELDS if key in row}
        yield json.dumps(kept, ensure_ascii=False) + "\n"


def export_wikipedia(output_dir: str | Path, n_train: int = 10_000, n_val: int = 1_000,
                     n_test: int = 1_000, load_dataset: Callable[..., Any] | None = None,
                     overwrite: bool = False) -> list[ExportedSplit]:
    """Write ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` into ``output_dir``.

    ``load_dataset`` defaults to ``datasets.load_dataset``; it is called as
    ``load_dataset("wikimedia/wikipedia", "20231101.en", split=...)`` and must
    return an iterable of rows with at least ``"text"``. Existing files are
    replaced only with ``overwrite``. Every split is fetched and checked before
    any file is written, and the three are written aside and then renamed into
    place, so a failure leaves the directory as it was, never a mixed set.
    """
    splits = wikipedia_splits(n_train, n_val, n_test)
    output_dir = Path(output_dir).expanduser()
    paths = {name: output_dir / f"{name}.jsonl" for name in splits}
    existing = [p.name for p in paths.values() if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise UserError(f"{output_dir}: already holds {', '.join(existing)}; pass --overwrite to replace "
                        "them, or choose another --output_dir")
    for path in paths.values():
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: is not a regular file; move it away and run again")
    loader = load_dataset if load_dataset is not None else _default_loader()
    fetched = {name: _rows(loader, split) for name, split in splits.items()}
    lines = {name: list(_jsonl_lines(rows, splits[name])) for name, rows in fetched.items()}

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{output_dir}: cannot create the output directory ({err.strerror})") from None
    staged = {name: output_dir / f".{name}.jsonl.staged" for name in splits}
    try:
        for name, path in staged.items():
            atomic.write_text(path, "".join(lines[name]))
        for name, path in staged.items():
            path.replace(paths[name])  # renames in one folder: nothing left to fail halfway
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return [ExportedSplit(name=name, path=paths[name], n_documents=len(lines[name]), split=splits[name])
            for name in splits]
