"""Reading model and run settings from JSON or TOML files."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.presets import preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


MAX_SETTINGS_BYTES = 1 << 20  # settings are a page of keys; a larger file is a wrong path
MAX_NESTING = 16  # settings nest two levels ([model] holds a list); deeper is not a settings file


def read_settings_file(path: Path) -> dict:
    """A JSON or TOML file as a mapping, with a one-line error naming the file."""
    text = read_settings_text(path)
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{path}: cannot parse ({err})") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise UserError(too_deep(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table/object of settings")
    check_nesting(data, path)
    return data


def read_settings_text(path: Path) -> str:
    """A settings file's text: a regular file (never a FIFO, a device or a directory, whose
    reading would block, never end or mean nothing) of at most ``MAX_SETTINGS_BYTES``."""
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise UserError(f"{path}: {_kind(before.st_mode)}, not a file; give a .toml or .json file")
        # Non-blocking: a FIFO put in its place since the check still cannot hold the read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path}: not a regular file; give a .toml or .json file")
        try:
            raw = file.read(MAX_SETTINGS_BYTES + 1)
        except OSError as err:
            raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise UserError(f"{path}: larger than {MAX_SETTINGS_BYTES // 1024:,} KiB, too large for a settings "
                        "file; check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_nesting(data: dict, path: Path) -> None:
    """Refuse ``data`` nesting lists and tables deeper than ``MAX_NESTING``: what reads its
    values on (and quotes them in errors) recurses too. Counted level by level, not recursively."""
    depth, level = 0, [data]
    while level:
        depth += 1
        if depth > MAX_NESTING:
            raise UserError(too_deep(path))
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]


def too_deep(path: Path) -> str:
    return f"{path}: nested too deeply to be a settings file (at most {MAX_NESTING} levels)"


def model_config_from_file(path: Path) -> GemmaConfig:
    """Model fields from a file; a ``preset`` key supplies the fields not given."""
    data = read_settings_file(path)
    model_data = data.get("model", data)
    if not isinstance(model_data, dict):
        raise UserError(f"{path}: 'model' must be a table of model fields")
    base = preset(data["preset"]).to_dict() if "preset" in data else {}
    base.update(model_data)
    return GemmaConfig.from_dict(base, source=str(path))
