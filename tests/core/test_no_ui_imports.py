"""The core is a library: importing any of gemma_core loads no UI toolkit.

Each check runs in a fresh interpreter, so modules this test process already
imported (the studio's tests load Textual) cannot hide a stray import.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import gemma_core

UI_MODULES = ("textual", "textual_plotext", "plotext")


def core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(gemma_core.__path__, "gemma_core.")
                  if not m.name.endswith("__main__"))


def loaded_after_importing(modules: list[str]) -> set[str]:
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(' '.join(m for m in {UI_MODULES!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_engine_modules_load_no_ui():
    required = ["gemma_core", "gemma_core.train.engine", "gemma_core.train.settings",
                "gemma_core.cli.train", "gemma_core.run.viewer", "gemma_core.telemetry",
                "gemma_core.run.events", "gemma_core.cli"]
    assert loaded_after_importing(required) == set()


def test_no_core_module_loads_ui():
    modules = core_modules()
    assert "gemma_core.train.engine" in modules and "gemma_core.telemetry" in modules
    assert loaded_after_importing(modules) == set()


def test_the_studio_package_loads_textual_only_when_asked():
    # `import gemma_tui` is cheap: the app (and Textual) loads in create_app / the CLI.
    assert loaded_after_importing(["gemma_tui"]) == set()
