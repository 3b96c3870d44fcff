"""The studio in a window of its own: the browser studio's page in a native window (pywebview).

The window is one more attached client of the run: the page is served on loopback by
``browser.serve_in_browser`` in a background thread and opened through a one-time link,
so the window holds no key in its address. Closing it asks whether to stop the run
(saving a checkpoint) or to keep it training in the background.

pywebview is the optional ``desktop`` extra (``pip install 'gemma-studio[desktop]'``, with
its Qt backend); without it, or without a display, the command says what to install and
offers ``gemma-tui serve`` instead.

As root (a Docker image's user) the window's web engine runs without Chromium's sandbox,
which refuses root; it shows only this studio's page, served on loopback. SIGTERM or
SIGINT closes the window without asking: the run goes on, and the exit status is 130.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from pathlib import Path

from gemma_core.errors import EXIT_INTERRUPTED, EXIT_OK, UserError
from gemma_core.safe_text import printable
from gemma_tui.browser import TITLE, WEB_DIR, serve_in_browser, stop_the_run

DEFAULT_SIZE = (1280, 760)  # where the screen's size cannot be known
SCREEN_SHARE = 0.9  # of the screen's available width and height: every pane fits, the panel shows
MIN_SIZE = (900, 560)  # smaller, and the studio's panes are cut; a smaller screen gets all of itself
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


def use_qt(webview) -> None:
    """Qt only (the backend the extra installs): pywebview would first try GTK, and print its
    traceback, for anything asked before ``start`` (the screen list). As root, Chromium inside
    Qt refuses to start with its sandbox: it runs without, and says so."""
    os.environ["PYWEBVIEW_GUI"] = "qt"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not os.environ.get("QTWEBENGINE_DISABLE_SANDBOX"):
        os.environ["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
        print("note: running as root, so the window's web engine runs without Chromium's sandbox (it shows "
              "only this studio's page, served on this machine); run as another user to keep it",
              file=sys.stderr, flush=True)


def window_size(webview) -> tuple[int, int]:
    """A share of the first screen's available size (without its panels), never under
    ``MIN_SIZE`` unless the screen itself is smaller."""
    try:
        screen = webview.screens[0]
    except Exception:  # no screen list before the toolkit starts, on some backends
        return DEFAULT_SIZE
    available = getattr(screen.frame, "availableGeometry", None)  # Qt's QScreen: the panels left out
    width, height = (available().width(), available().height()) if callable(available) else (
        screen.width, screen.height)
    if width <= 0 or height <= 0:
        return DEFAULT_SIZE
    return (min(width, max(MIN_SIZE[0], int(width * SCREEN_SHARE))),
            min(height, max(MIN_SIZE[1], int(height * SCREEN_SHARE))))


def close_on_stop_signals(close) -> None:
    """SIGTERM and SIGINT call ``close()`` while the toolkit's loop runs. Python runs a signal's
    handler only between its own instructions, which a C++ event loop may not reach for long;
    the wakeup descriptor is written at once, and a thread waiting on it closes the window."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # the wakeup byte does the work; no KeyboardInterrupt in Qt

    def wait() -> None:
        while True:
            got = os.read(read_end, 64)
            if any(byte in (signal.SIGTERM, signal.SIGINT) for byte in got):
                close()
                return

    threading.Thread(target=wait, name="gemma-desktop-signals", daemon=True).start()


def open_window(run_dir: Path) -> int:
    """Show the live run in ``run_dir`` in a window until it closes; stop the run if asked to."""
    webview = require_window_toolkit()
    use_qt(webview)
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
    width, height = window_size(webview)
    window = webview.create_window(TITLE, link, width=width, height=height,
                                   min_size=(min(width, MIN_SIZE[0]), min(height, MIN_SIZE[1])),
                                   background_color="#0f1117")
    decision: dict[str, bool] = {}  # "stop": the user's answer, once given
    signalled = threading.Event()

    def close_at_once() -> None:  # a stop signal: nobody to ask, so the run goes on
        signalled.set()
        decision.setdefault("stop", False)
        window.destroy()

    def ask_then_close() -> None:
        decision["stop"] = bool(window.create_confirmation_dialog(TITLE, CLOSE_QUESTION.format(run=run_dir)))
        window.destroy()

    def on_closing():
        if "stop" in decision:
            return True  # answered: let it close
        threading.Thread(target=ask_then_close, name="gemma-desktop-close", daemon=True).start()
        return False  # not yet: ask first (the toolkit's own thread must not wait on its own dialog)

    window.events.closing += on_closing
    close_on_stop_signals(close_at_once)
    webview.start(gui="qt", icon=str(WEB_DIR / "icon.png"))
    stop_serving.set()
    server.join(timeout=10)
    if decision.get("stop"):
        stop_the_run(run_dir)
    else:
        print(printable(f"the run goes on; gemma-tui attach {run_dir} (or desktop {run_dir}) comes back to it"))
    if signalled.is_set():
        print("error: interrupted (the window was closed by a stop signal)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
