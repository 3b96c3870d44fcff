"""Reading model and run settings from JSON or TOML files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.presets import preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_settings_file(path: Path) -> dict:
    """A JSON or TOML file as a mapping, with a one-line error naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .toml or .json file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{path}: cannot parse ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table/object of settings")
    return data


def model_config_from_file(path: Path) -> GemmaConfig:
    """Model fields from a file; a ``preset`` key supplies the fields not given."""
    data = read_settings_file(path)
    model_data = data.get("model", data)
    if not isinstance(model_data, dict):
        raise UserError(f"{path}: 'model' must be a table of model fields")
    base = preset(data["preset"]).to_dict() if "preset" in data else {}
    base.update(model_data)
    return GemmaConfig.from_dict(base, source=str(path))
