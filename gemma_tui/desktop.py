"""The studio in a window of its own: the browser studio's page in a native window (pywebview).

The window is one more attached client of the run: the page is served on loopback by
``browser.serve_in_browser`` in a background thread and opened through a one-time link,
so the window holds no key in its address. Closing it asks whether to stop the run
(saving a checkpoint) or to keep it training in the background.

pywebview is the optional ``desktop`` extra (``pip install 'gemma-studio[desktop]'``, with
its Qt backend); without it, or without a display, the command says what to install and
offers ``gemma-tui serve`` instead.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path

from gemma_core.errors import EXIT_OK, UserError
from gemma_tui.browser import TITLE, WEB_DIR, serve_in_browser, stop_the_run

DEFAULT_SIZE = (1280, 760)  # fits a 1366 x 768 laptop screen with its panel
CLOSE_QUESTION = ("Stop the run as the window closes?\n\n"
                  "OK stops it, saving a checkpoint.\n"
                  "Cancel keeps it training in the background: gemma-tui attach {run} (or desktop {run}) "
                  "comes back to it.")


def require_window_toolkit():
    """pywebview, and a display for its window; a one-line UserError saying what is missing."""
    try:
        import webview
    except ImportError:
        raise UserError("the desktop window needs its extra: pip install 'gemma-studio[desktop]' (pywebview "
                        "with Qt); meanwhile `gemma-tui serve` shows the same studio in a browser") from None
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("there is no display to open a window on (DISPLAY is not set); `gemma-tui serve` shows "
                        "the same studio in a browser, on this machine or through an ssh tunnel")
    return webview


def _window_size(webview) -> tuple[int, int]:
    try:
        screen = webview.screens[0]
        return min(DEFAULT_SIZE[0], int(screen.width * 0.92)), min(DEFAULT_SIZE[1], int(screen.height * 0.88))
    except Exception:  # no screen list before the toolkit starts, on some backends
        return DEFAULT_SIZE


def open_window(run_dir: Path) -> int:
    """Show the live run in ``run_dir`` in a window until it closes; stop the run if asked to."""
    webview = require_window_toolkit()
    stop_serving = threading.Event()
    links: queue.Queue[str] = queue.Queue()
    server = threading.Thread(target=serve_in_browser, name="gemma-desktop-server",
                              args=(run_dir, "127.0.0.1", 0, False),
                              kwargs={"stop": stop_serving, "on_link": links.put}, daemon=True)
    server.start()
    try:
        link = links.get(timeout=60)
    except queue.Empty:
        raise UserError(f"{run_dir}: the studio's page did not start; try `gemma-tui serve {run_dir}`") from None
    width, height = _window_size(webview)
    window = webview.create_window(TITLE, link, width=width, height=height, min_size=(900, 560),
                                   background_color="#0f1117")
    decision: dict[str, bool] = {}  # "stop": the user's answer, once given

    def ask_then_close() -> None:
        decision["stop"] = bool(window.create_confirmation_dialog(TITLE, CLOSE_QUESTION.format(run=run_dir)))
        window.destroy()

    def on_closing():
        if "stop" in decision:
            return True  # answered: let it close
        threading.Thread(target=ask_then_close, name="gemma-desktop-close", daemon=True).start()
        return False  # not yet: ask first (the toolkit's own thread must not wait on its own dialog)

    window.events.closing += on_closing
    webview.start(gui="qt", icon=str(WEB_DIR / "icon.png"))
    stop_serving.set()
    server.join(timeout=10)
    if decision.get("stop"):
        stop_the_run(run_dir)
    else:
        print(f"the run goes on; gemma-tui attach {run_dir} (or desktop {run_dir}) comes back to it")
    return EXIT_OK
