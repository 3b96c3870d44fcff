"""Theme files: the shipped ones load, a bad one is reported and never fatal."""

from __future__ import annotations

import pytest

from gemma_tui import themes
from gemma_tui.palette import FALLBACKS
from gemma_tui.themes import ThemeFileError, discover_themes, load_theme_file

SHIPPED_THEMES = themes.THEME_DIR


@pytest.mark.parametrize("name, dark", [("gemma-dark", True), ("gemma-light", False)])
def test_shipped_themes_load_with_every_studio_colour(name, dark):
    theme = load_theme_file(SHIPPED_THEMES / f"{name}.toml")
    assert theme.name == name and theme.dark is dark
    assert set(FALLBACKS) <= set(theme.variables)


def test_the_package_finds_its_shipped_themes():
    assert (SHIPPED_THEMES / "gemma-dark.toml").is_file()
    names = {t.name for t in discover_themes().themes}
    assert {"gemma-dark", "gemma-light"} <= names


@pytest.mark.parametrize("text, problem", [
    ("name = [", "not valid TOML"),
    ('name = "x"\nprimary = "nope"\n', "bad colour"),
    ('name = "x"\n', "primary"),
    ('name = "x"\nprimary = "#123456"\nsparkle = true\n', "sparkle"),
    ('name = "x"\nprimary = "#123456"\n[variables]\ngemma-train = "nope"\n', "bad colour"),
    ('name = "x"\nprimary = "#123456"\nvariables = 3\n', "[variables]"),
])
def test_bad_theme_files_raise_one_line_errors_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ThemeFileError) as err:
        load_theme_file(path)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_file_does_not_hide_the_good_ones(tmp_path):
    (tmp_path / "good.toml").write_text('primary = "#336699"\n', encoding="utf-8")
    (tmp_path / "bad.toml").write_text("primary = \n", encoding="utf-8")
    scan = discover_themes((tmp_path, tmp_path / "absent"))
    assert [t.name for t in scan.themes] == ["good"]  # the name defaults to the file's
    assert len(scan.errors) == 1 and "bad.toml" in scan.errors[0]


def test_missing_file_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(ThemeFileError, match="cannot read"):
        load_theme_file(tmp_path / "absent.toml")
