"""Gemma Studio's terminal UI: a Textual client of ``gemma_core``'s training engine.

``gemma_core`` never imports this package; this package reaches the engine only
through its public API (``gemma_core.run.handle.RunHandle``) and immutable snapshots.
"""

from __future__ import annotations


def create_app(engine, theme: str | None = None, **options):
    """The studio app for ``engine`` (imported lazily: Textual loads only when asked)."""
    from gemma_tui.app import create_app as _create_app

    return _create_app(engine, theme=theme, **options)
