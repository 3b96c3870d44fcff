"""The studio's themes: TOML files loaded into Textual themes.

A theme file holds the fields of ``textual.theme.Theme`` at the top level and
the studio's own colours in ``[variables]`` (see ``palette.py``). The shipped
ones live beside this file, as package data, so a source checkout and an
installed wheel find them in the same place. A file that does not load is
reported, never fatal: the app notifies and keeps its other themes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from gemma_core.errors import UserError
from gemma_core.train.config_file import check_nesting, read_settings_text, too_deep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_THEME = "gemma-dark"
FALLBACK_THEME = "textual-dark"  # built into Textual, always there

THEME_DIR = Path(__file__).resolve().parent  # gemma-dark.toml, gemma-light.toml
THEME_DIRS = (THEME_DIR,)


class ThemeFileError(Exception):
    """A theme file that cannot become a theme; the message names the file."""


@dataclass(frozen=True)
class ThemeScan:
    themes: tuple[Theme, ...]
    errors: tuple[str, ...]  # one line per file that did not load


def load_theme_file(path: str | Path) -> Theme:
    """One TOML file as a Textual theme, checked so that applying it cannot fail."""
    path = Path(path)
    try:  # a settings file like any other: a regular file, of a settings file's size and depth
        data = tomllib.loads(read_settings_text(path))
        check_nesting(data, path)
    except UserError as err:
        raise ThemeFileError(f"cannot read {err}") from None
    except RecursionError:
        raise ThemeFileError(too_deep(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ThemeFileError(f"{path}: not valid TOML ({err})") from None
    data.setdefault("name", path.stem)
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
        raise ThemeFileError(f"{path}: [variables] must map names to colour strings")
    try:
        theme = Theme(**data)
        # Theme() accepts anything; building the colour system is what would fail
        # later, inside Textual, when the theme is applied.
        theme.to_color_system().generate()
        for key, value in variables.items():
            if key.startswith("gemma-"):
                Color.parse(value)
    except TypeError as err:
        raise ThemeFileError(f"{path}: {err}") from None
    except (ColorParseError, ValueError) as err:
        raise ThemeFileError(f"{path}: bad colour ({err})") from None
    if not isinstance(theme.name, str) or not theme.name:
        raise ThemeFileError(f"{path}: 'name' must be a non-empty string")
    return theme


def discover_themes(dirs: tuple[Path, ...] = THEME_DIRS) -> ThemeScan:
    """Every loadable *.toml theme in ``dirs``; the first of a name wins."""
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeFileError as err:
                errors.append(str(err))
                continue
            themes.setdefault(theme.name, theme)
    return ThemeScan(tuple(themes.values()), tuple(errors))


def use_studio_themes(app, wanted: str | None) -> None:
    """Register the studio's themes on ``app`` (a studio's companion: the run picker, the
    comparison) and pick ``wanted`` if it is one, else the default: these windows keep the
    studio's look, and the studio itself reports a theme that does not load."""
    for theme in discover_themes().themes:
        app.register_theme(theme)
    for name in (wanted, DEFAULT_THEME, FALLBACK_THEME):
        if name and name in app.available_themes:
            app.theme = name
            return
