"""gemma_core is layered: a module imports only from its own package and from layers below,
and imports what it needs at the top unless a reason keeps the import inside a function.

The order, lowest first, is the README's code map and gemma_core/__init__.py's docstring.
An import inside a function or under ``if TYPE_CHECKING`` counts as much as one at the top:
a lazy import still makes the lower layer depend on the upper one. (Like test_no_ui_imports,
this reads the source, so nothing already imported can hide a stray import.)

An import of a gemma_core module inside a function is allowed for one reason only: at the
top it would make the importing module load a heavy library it does not load now (torch
above all: ``gemma-core --help``, a run's clients and the studio's start stay free of it).
An import kept inside a function to dodge an import cycle, or for no reason, fails here.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import gemma_core

ROOT = Path(gemma_core.__file__).parent

# Lowest first. A top-level module or a package is one layer; within a package, modules
# import each other freely.
LAYERS = (
    "assets", "errors", "safe_text", "value_types", "folder_lock", "atomic", "device", "telemetry",
    "tokenizers",
    "model",
    "chat", "inspect",
    "data",
    "run",        # a run: what it says (events, state_store, handle) and what it leaves on disk
    "hf",
    "train",      # training: the engine, steps, checkpoint writing; it starts no server
    "serve",      # a run's HTTP API, server and clients
    "api",        # the Python API: the engine that serves its run, as the CLI's does
    "cli",
)
RANK = {name: i for i, name in enumerate(LAYERS)}
FACADE = "gemma_core"  # __init__: lazy public names only; it may name anything, nothing may import it
# Third-party libraries slow to import: a reason to import a gemma_core module that brings
# one inside the function that needs it.
HEAVY = ("torch", "safetensors", "numpy", "aiohttp", "tokenizers", "rich", "matplotlib", "huggingface_hub",
         "transformers", "gguf")


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


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from .x import y
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # `from gemma_core import atomic` imports the module gemma_core.atomic
    return sorted({f"{target}.{a.name}" if target.startswith("gemma_core") and is_module(f"{target}.{a.name}")
                   else target for a in node.names})


def imports_of(path: Path) -> list[tuple[ast.AST, str, str]]:
    """(node, where, target) for each import in ``path``: where is "top", "function" or
    "type checking"."""
    module, found = module_name(path), []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if where == "top" else where)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, "type checking")
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in imported_modules(child, module, path.name == "__init__.py"):
                    found.append((child, where, target))
            else:
                visit(child, where)

    visit(ast.parse(path.read_text(encoding="utf-8")), "top")
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@cache
def top_level_imports(module: str) -> frozenset[str]:
    """What ``module`` imports at its top, with the packages on the way (their __init__ runs)."""
    found = set()
    for _, where, target in imports_of(MODULES[module]):
        if where == "top":
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(found)


def loaded_by(module: str, with_packages: bool = True) -> set[str]:
    """Every module importing ``module`` loads, as far as the source says. ``with_packages``:
    with the packages above each (a package's __init__ importing its own modules at the top
    is no cycle, so the cycle check leaves them out)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in MODULES:
            todo.extend(top_level_imports(name))
            if with_packages and "." in name:
                todo.append(name.rsplit(".", 1)[0])
    return seen


def heavy_libraries(module: str) -> set[str]:
    return {lib for name in loaded_by(module) for lib in HEAVY if name.split(".")[0] == lib}


def upward_imports() -> list[str]:
    found = []
    for module, path in MODULES.items():
        source = layer_of(module)
        if source == FACADE:
            continue
        for node, _, target in imports_of(path):
            if target.split(".")[0] != "gemma_core":
                continue
            dest = layer_of(target)
            if dest == source:
                continue
            if dest == FACADE or RANK[dest] > RANK[source]:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {source} imports {target} "
                             f"({dest}, above it)")
    return found


def needless_function_imports() -> list[str]:
    found = []
    for module, path in MODULES.items():
        for node, where, target in imports_of(path):
            if where != "function" or not target.startswith("gemma_core.") or target not in MODULES:
                continue
            if heavy_libraries(target) - heavy_libraries(module):
                continue  # kept lazy so that importing this module does not load a heavy library
            cycle = module in loaded_by(target, with_packages=False) - {target}
            why = ("it dodges an import cycle: break the cycle instead" if cycle
                   else "nothing heavy comes with it: import it at the top")
            found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {module} imports {target} "
                         f"inside a function; {why}")
    return found


def test_every_module_has_a_layer():
    layers = {layer_of(m) for m in MODULES} - {FACADE}
    assert layers <= set(RANK), f"place these in LAYERS: {sorted(layers - set(RANK))}"


def test_no_module_imports_a_layer_above_its_own():
    found = upward_imports()
    assert not found, "imports of a layer above (see LAYERS):\n" + "\n".join(found)


def test_no_import_hides_inside_a_function_without_a_reason():
    found = needless_function_imports()
    assert not found, "function-level imports to move to the top:\n" + "\n".join(found)


def test_the_checks_see_a_stray_import(tmp_path):
    """The rules catch what they are for: an upward import, and a lazy import of a light module."""
    stray = ast.parse("def f():\n    from gemma_core.serve import client\n    from gemma_core import errors\n")
    targets = [imported_modules(node, "gemma_core.run.x", False) for node in ast.walk(stray)
               if isinstance(node, ast.ImportFrom)]
    assert targets == [["gemma_core.serve.client"], ["gemma_core.errors"]]
    assert RANK[layer_of("gemma_core.serve.client")] > RANK[layer_of("gemma_core.run.x")]
    assert not heavy_libraries("gemma_core.errors")
    assert "torch" in heavy_libraries("gemma_core.model.model")
