"""gemma_core is layered: a module imports only from its own package and from layers below.

The order, lowest first, is the README's code map. An import inside a function or
under ``if TYPE_CHECKING`` counts as much as one at the top: a lazy import still
makes the lower layer depend on the upper one. (Like test_no_ui_imports, this reads
the source, so nothing already imported can hide a stray import.)
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import gemma_core

ROOT = Path(os.environ.get("GEMMA_LAYERS_ROOT") or Path(gemma_core.__file__).parent)

# Lowest first. A top-level module or a package is one layer; within a package, modules
# import each other freely.
LAYERS = (
    "assets", "errors", "safe_text", "value_types", "folder_lock", "atomic", "device", "telemetry",
    "tokenizers",
    "model",
    "chat", "inspect",
    "data",
    "run",        # a run: what it says (events, state_store) and what it leaves on disk
    "hf",
    "train",      # training: the engine, steps, checkpoint writing
    "serve",      # a run's HTTP API, server and client
    "api",        # the Python API: the engine that serves its run, as the CLI's does
    "cli",
)
RANK = {name: i for i, name in enumerate(LAYERS)}
FACADE = "gemma_core"  # __init__: lazy public names only; it may name anything, nothing may import it


def module_name(path: Path) -> str:
    parts = ["gemma_core", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return FACADE
    return "cli" if parts[1] == "__main__" else parts[1]


def is_module(name: str) -> bool:
    rel = ROOT.joinpath(*name.split(".")[1:])
    return rel.is_dir() or rel.with_suffix(".py").is_file()


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from .x import y
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # `from gemma_core import atomic` imports the module gemma_core.atomic
    return sorted({f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target for a in node.names})


def upward_imports() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path)
        source = layer_of(module)
        if source == FACADE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported_modules(node, module, path.name == "__init__.py"):
                if target.split(".")[0] != "gemma_core":
                    continue
                dest = layer_of(target)
                if dest == source:
                    continue
                if dest == FACADE or RANK[dest] > RANK[source]:
                    found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {source} imports {target} "
                                 f"({dest}, above it)")
    return found


def test_every_module_has_a_layer():
    layers = {layer_of(module_name(p)) for p in ROOT.rglob("*.py")} - {FACADE}
    assert layers <= set(RANK), f"place these in LAYERS: {sorted(layers - set(RANK))}"


def test_no_module_imports_a_layer_above_its_own():
    found = upward_imports()
    assert not found, "imports of a layer above (see LAYERS):\n" + "\n".join(found)
