"""Whether a value read from a person (a TOML or JSON file, an API body, a Python call) has
the type a dataclass field is annotated with, and the one line that says so when it has not.

One rule per annotation, so every field of every settings class is checked alike: a new
field is checked as soon as it is declared, with no list of names to keep up to date.
"""

from __future__ import annotations

import functools
import reprlib
import types
import typing
from typing import Any

_KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
_KINDS = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """The evaluated annotation of each field of the dataclass ``cls``."""
    return typing.get_type_hints(cls)


def type_mismatch(name: str, value: Any, hint: Any) -> str | None:
    """``None`` when ``value`` fits ``hint``; else "NAME must be KIND, got VALUE"."""
    if fits(value, hint):
        return None
    return f"{name} must be {describe(hint)}, got {shown(value)}"


def fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # True is not a count
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # a whole number is a number too (TOML writes 1 for 1.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):  # files and JSON bodies give lists where settings hold tuples
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(fits(v, item) for v in value)
    if origin is dict:
        key, item = args if args else (Any, Any)
        return isinstance(value, dict) and all(fits(k, key) and fits(v, item) for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: Any) -> str:
    """What a value of ``hint`` is, for a person: "a whole number", "a list of 2 numbers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(dict.fromkeys(kinds))
    if hint in _KIND:
        return _KIND[hint]
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            same = len(set(args)) == 1 and args[0] in _KINDS
            return f"a list of {len(args)} {_KINDS[args[0]]}" if same else f"a list of {len(args)} values"
        item = args[0] if args else Any
        return f"a list of {_KINDS[item]}" if item in _KINDS else "a list"
    if origin is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


def shown(value: Any) -> str:
    """A value as an error line quotes it: as Python writes it, cut short (a file's list may
    be long, or deeply nested)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
