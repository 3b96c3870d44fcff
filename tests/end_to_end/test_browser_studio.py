"""The studio in a real browser (headless Chromium driven by Playwright) and in a real window
(pywebview under Xvfb): every page and window is a studio attached to one run, which goes on
when they close.

These need Debian's chromium (and, for the window, xvfb, xdotool, x11-apps and Qt's X
libraries) and the desktop extra; `.ci/run` installs them. Where they are missing the
tests say so and skip. ``GEMMA_STUDIO_SCREENSHOTS=docs`` saves the README's screenshots.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gemma_core.data.corpus import bundled_works

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
SCREENSHOTS = os.environ.get("GEMMA_STUDIO_SCREENSHOTS")


def screenshot_path(tmp_path: Path, name: str) -> Path:
    return Path(SCREENSHOTS) / name if SCREENSHOTS else tmp_path / name


def gemma(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_core", *args], capture_output=True, text=True,
                          timeout=timeout)


def status(folder: Path) -> dict:
    return json.loads(gemma("status", str(folder), "--json").stdout)


def wait_until(condition, timeout: float = 120, what: str = "condition", shown=None) -> None:
    """Wait for ``condition``; on a timeout, say what and (``shown``: a page) what the page last showed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    screen = f"; the page last showed:\n{shown.last_screen()}" if shown is not None else ""
    raise AssertionError(f"timed out waiting for {what}{screen}")


@pytest.fixture
def served_run(tmp_path):
    """A nano run started by `gemma-tui serve` with launch flags, and the link it printed."""
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    folder = tmp_path / "run"
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    server = subprocess.Popen([sys.executable, "-m", "gemma_tui", "serve", "--preset", "nano", "--output_dir",
                               str(folder), "--train_dataset_path", str(data), "--device", "cpu",
                               "--max_steps", "1000000", "--eval_iters", "50", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    link = None
    try:
        for line in server.stdout:
            found = re.search(r"open (http://\S+)", line)
            if found:
                link = found.group(1)
                break
        assert link, server.stderr.read()
        yield folder, link, server
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(30) == 130
        finally:
            if server.poll() is None:
                server.kill()
            if (folder / "server.json").exists():
                gemma("control", str(folder), "stop")


def missing(what: str) -> None:
    """Skip where a tool these tests drive is absent, but fail in CI, whose .ci/run installs them all."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; .ci/run installs it")
    pytest.skip(f"{what} is not installed (.ci/run shows how)")


def required_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python module {name}")


def chromium():
    playwright = required_module("playwright.sync_api")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("Debian's chromium (apt-get install chromium)")
    return playwright, path


class Page:
    """A browser page on the studio, with the terminal text its websocket carried."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1600, "height": 960})
        self.stream = bytearray()
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.goto(url)

    def _frame(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            self.stream.extend(payload)

    def text(self) -> str:
        self.page.wait_for_timeout(50)  # Playwright's sync API delivers frames only inside its own calls
        return ANSI.sub(b"", bytes(self.stream)).decode("utf-8", "replace")

    def last_screen(self) -> str:
        return self.text()[-4000:]

    def shows(self, *words: str) -> bool:
        text = self.text()
        return all(word in text for word in words)


def test_the_studio_in_a_browser_drives_and_watches_the_run(served_run, tmp_path):
    playwright, path = chromium()
    folder, link, _ = served_run
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        first = Page(browser, link)
        wait_until(lambda: first.shows("Loss", "Run", "Layers", "Chat", "Machine", "RUNNING"), 120,
                   "every pane in the page", first)
        assert first.page.title() == "Gemma Studio" and "once=" not in first.page.url
        step = status(folder)["step"]
        wait_until(lambda: status(folder)["step"] > step, 60, "the step count to move")

        # Keys in the page drive the run: p pauses it.
        first.page.click("#terminal")
        first.page.keyboard.press("p")
        wait_until(lambda: status(folder)["state"] == "paused", 60, "the pause")
        first.page.keyboard.press("p")
        wait_until(lambda: status(folder)["state"] == "running", 60, "the resume")

        # A prompt in the chat pane streams a reply.
        first.page.keyboard.press("/")
        first.page.keyboard.type("ROMEO")
        first.page.keyboard.press("Enter")
        wait_until(lambda: "model @ step" in first.text(), 120, "the reply", first)
        wait_until(lambda: "streaming" not in first.text()[-3000:], 120, "the reply to end", first)
        time.sleep(1.0)
        first.page.screenshot(path=str(screenshot_path(tmp_path, "browser-studio.png")))

        # The printed link works once; a second page gives the run's key instead.
        second = Page(browser, link)
        assert "the run's key" in second.page.content()
        second.page.fill("input[name=key]", (folder / "server.token").read_text())
        second.page.click("button[type=submit]")
        wait_until(lambda: second.shows("Loss", "Machine", "RUNNING"), 120, "the second page", second)

        # Closing a page leaves the run training; so does closing them all.
        first.page.close()
        step = status(folder)["step"]
        wait_until(lambda: status(folder)["step"] > step, 60, "training after a page closed")
        second.page.close()
        browser.close()
    step = status(folder)["step"]
    wait_until(lambda: status(folder)["step"] > step and status(folder)["live"], 60, "training after the browser")


def test_a_page_without_the_link_or_the_key_gets_nothing(served_run):
    import http.client
    from urllib.parse import urlsplit

    folder, link, _ = served_run
    parts = urlsplit(link)

    def get(path: str, headers: dict | None = None) -> tuple[int, str, dict]:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        connection.close()
        return response.status, body, dict(response.getheaders())

    code, body, _ = get("/")
    assert code == 200 and "the run's key" in body and (folder / "server.token").read_text() not in body
    assert get("/ws")[0] == 401 and get("/static/js/textual.js")[0] == 401
    code, _, headers = get(f"/?{parts.query}")  # the printed link: a session cookie, once
    assert code == 302 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert get(f"/?{parts.query}")[0] == 401  # used up
    cookie = headers["Set-Cookie"].split(";")[0]
    assert get("/", {"Cookie": cookie})[0] == 200
    assert get("/ws", {"Cookie": cookie, "Origin": "http://evil.example"})[0] == 403


def test_the_studio_in_a_window_of_its_own(tmp_path):
    required_module("webview")
    xlib = required_module("Xlib.display")
    for tool in ("Xvfb", "xdotool", "xwd", "convert"):
        if shutil.which(tool) is None:
            missing(f"{tool} (apt-get install xvfb xdotool x11-apps imagemagick)")
    display = ":97"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1366x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    folder = tmp_path / "run"
    env = dict(os.environ, DISPLAY=display, QTWEBENGINE_CHROMIUM_FLAGS="--no-sandbox",
               GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    window = subprocess.Popen([sys.executable, "-m", "gemma_tui", "desktop", "--preset", "nano", "--output_dir",
                               str(folder), "--train_dataset_path", str(data), "--device", "cpu",
                               "--max_steps", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)

    def windows() -> list[int]:
        found = subprocess.run(["xdotool", "search", "--name", "^Gemma Studio$"], capture_output=True, text=True,
                               env=env).stdout.split()
        return [int(w) for w in found]

    try:
        wait_until(lambda: windows(), 180, "the window")
        wait_until(lambda: status(folder).get("step", 0) >= 5, 120, "the run")
        time.sleep(8)  # the page connects and draws
        shot = tmp_path / "window.xwd"
        subprocess.run(["xwd", "-root", "-silent", "-out", str(shot)], env=env, check=True)
        png = screenshot_path(tmp_path, "desktop-studio.png")
        subprocess.run(["convert", str(shot), str(png)], check=True)
        assert png.stat().st_size > 50_000  # a drawn studio, not a blank window
        raw = shot.read_bytes()
        assert len(set(raw[len(raw) // 3: 2 * len(raw) // 3: 97])) > 8  # many colours: not blank

        # Close it as a window manager would, and answer "keep training" (Cancel, or Escape).
        x = xlib.Display(display)
        from Xlib import X, protocol
        target = x.create_resource_object("window", windows()[0])
        target.send_event(protocol.event.ClientMessage(
            window=target, client_type=x.intern_atom("WM_PROTOCOLS"),
            data=(32, [x.intern_atom("WM_DELETE_WINDOW"), X.CurrentTime, 0, 0, 0])))
        x.flush()
        wait_until(lambda: len(windows()) >= 2, 30, "the question")
        dialog = windows()[-1]
        subprocess.run(["xdotool", "key", "--window", str(dialog), "Escape"], env=env)
        out, _ = window.communicate(timeout=60)
        assert window.returncode == 0 and "the run goes on" in out
        step = status(folder)["step"]
        wait_until(lambda: status(folder)["step"] > step, 60, "training after the window closed")
    finally:
        if window.poll() is None:
            window.kill()
        if (folder / "server.json").exists():
            gemma("control", str(folder), "stop")
        xvfb.terminate()
        xvfb.wait(10)


def test_serving_beyond_this_machine_warns_and_leaves_the_run_training(served_run):
    folder, _, _ = served_run
    other = subprocess.Popen([sys.executable, "-m", "gemma_tui", "serve", str(folder), "--host", "0.0.0.0",
                              "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = other.stderr.readline()
        assert warning.startswith("warning: listening on 0.0.0.0") and "controls the run" in warning
        assert "open http://" in other.stdout.readline()
    finally:
        other.send_signal(signal.SIGINT)
        assert other.wait(30) == 130
    assert status(folder)["live"]


def test_the_desktop_window_says_what_it_needs_and_offers_the_browser(tmp_path):
    # Without a display, and without pywebview: one line each, exit 2, nothing started.
    no_display = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    folder = tmp_path / "run"
    for env, setup in ((no_display, ""), (dict(os.environ), "import sys; sys.modules['webview'] = None; ")):
        done = subprocess.run([sys.executable, "-c", setup + "from gemma_tui.cli import main; raise SystemExit(main())",
                               "desktop", "--preset", "nano", "--output_dir", str(folder)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        line, = done.stderr.splitlines()
        assert line.startswith("error: ") and "gemma-tui serve" in line
        assert not folder.exists()
    assert "pip install 'gemma-studio[desktop]'" in line


# ------------------------------------------------------- keys, progress, a run that ends
def launch_chromium(p, path: str):
    return p.chromium.launch(executable_path=path, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"])


class Lines:
    """A process's output lines, read as they come, so a test can wait for one without blocking."""

    def __init__(self, stream) -> None:
        import threading

        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        found: list[re.Match] = []

        def seen() -> bool:
            found[:] = [m for m in (re.search(pattern, line) for line in list(self.lines)) if m]
            return bool(found)

        wait_until(seen, timeout, f"a line matching {pattern!r} in {self.lines}")
        return found[-1]


def http_get(url: str, cookie: str | None = None) -> tuple[int, str, dict]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                       headers={"Cookie": cookie} if cookie else {})
    response = connection.getresponse()
    body = response.read().decode("utf-8", "replace")
    connection.close()
    return response.status, body, dict(response.getheaders())


HELP_WORDS = "Close help"  # the help screen's own footer, and no other screen's


def test_keys_work_in_a_fresh_page_without_a_click_and_the_page_says_what_it_waits_for(served_run):
    playwright, path = chromium()
    folder, link, _ = served_run
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p, path)
        page = Page(browser, link)
        steps = page.page.inner_text("#waiting")  # what the page waits for, before the studio draws
        assert "connecting to the studio's server" in steps and "first frame" in steps
        wait_until(lambda: page.shows("Loss", "Machine", "RUNNING"), 120, "the studio in the page", page)
        times = page.page.evaluate("window.gemmaConnect")  # page load -> socket -> first frame, in ms
        assert 0 < times["page"] <= times["socket"] <= times["studio"]
        assert not page.page.is_visible("#waiting")

        # No click first: the terminal has the keys from the start.
        page.page.keyboard.press("p")
        wait_until(lambda: status(folder)["state"] == "paused", 60, "the pause from a page never clicked")
        page.page.keyboard.press("p")
        wait_until(lambda: status(folder)["state"] == "running", 60, "the resume")

        # The help key of the footer (F1), and its other binding (?), open the help in the page.
        for key in ("F1", "?"):
            before = len(page.text())
            page.page.keyboard.press(key)
            wait_until(lambda: HELP_WORDS in page.text()[before:], 60, f"the help from {key}", page)
            page.page.keyboard.press("F1")  # closes it (Escape then ? at once would read as Alt+?)

        # A page that lost the focus to its body gets it back on a click anywhere.
        page.page.evaluate("document.activeElement.blur()")
        page.page.mouse.click(200, 200)  # on the loss chart (a corner of the screen opens the palette)
        page.page.keyboard.press("p")
        wait_until(lambda: status(folder)["state"] == "paused", 60, "the pause after the focus was lost", page)
        browser.close()


def test_serving_notices_the_run_ended_and_shows_it_read_only(served_run):
    playwright, path = chromium()
    folder, link, server = served_run
    printed = Lines(server.stdout)
    wait_until(lambda: status(folder).get("step", 0) >= 2, 120, "the run's first steps")
    assert gemma("control", str(folder), "stop").returncode == 0

    # The serving terminal says so, with a link to the run as gemma-tui open shows it.
    ended = printed.wait_for(r"has stopped at step [\d,]+; its pages now show it read-only.*open (http://\S+)")
    code, body, _ = http_get(link.split("/?")[0] + "/")
    assert code == 200 and "The run has ended" in body and "shows it read-only" in body
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p, path)
        page = Page(browser, ended.group(1))
        wait_until(lambda: page.shows("Loss", "Run", "STOPPED"), 120, "the finished run, read-only", page)
        browser.close()

    # Served afresh, the ended run is read-only from the start; no key file, so no key is asked for.
    again = subprocess.Popen([sys.executable, "-m", "gemma_tui", "serve", str(folder), "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = Lines(again.stdout).wait_for(r"the run has stopped at step [\d,]+: shown read-only\): open (http://\S+)")
        code, body, _ = http_get(first.group(1).split("/?")[0] + "/")
        assert code == 200 and "has ended" in body and 'name="key"' not in body and "server.token" not in body
        code, _, headers = http_get(first.group(1))
        assert code == 302 and http_get(first.group(1).split("/?")[0] + "/",
                                        headers["Set-Cookie"].split(";")[0])[0] == 200
    finally:
        again.send_signal(signal.SIGINT)
        assert again.wait(30) == 130
        assert "Traceback" not in again.stderr.read()

    # A folder that holds no run is still refused in one line.
    empty = folder.parent / "empty"
    empty.mkdir()
    refused = subprocess.run([sys.executable, "-m", "gemma_tui", "serve", str(empty), "--port", "0"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1


# ------------------------------------------------------------------ the window
class FakeScreen:
    def __init__(self, width: int, height: int, available: tuple[int, int] | None = None) -> None:
        self.width, self.height = width, height
        self.frame = None
        if available is not None:  # as Qt's QScreen: the size left by the panels
            size = type("Size", (), {"width": lambda _: available[0], "height": lambda _: available[1]})()
            self.frame = type("QScreen", (), {"availableGeometry": lambda _: size})()


@pytest.mark.parametrize("screen, size", [
    (FakeScreen(1920, 1080), (1728, 972)),  # 90 % of the screen
    (FakeScreen(2560, 1440, available=(2560, 1400)), (2304, 1260)),  # less the panel
    (FakeScreen(1366, 768, available=(1366, 728)), (1229, 655)),
    (FakeScreen(1000, 600), (900, 560)),  # never under the size the panes need...
    (FakeScreen(800, 480), (800, 480)),  # ...unless the screen is smaller: then all of it
])
def test_the_desktop_window_is_sized_from_the_screen(screen, size):
    from gemma_tui.desktop import window_size

    assert window_size(type("webview", (), {"screens": [screen]})()) == size


def test_the_window_starts_as_root_fits_its_screen_and_ends_on_sigterm(tmp_path):
    required_module("webview")
    for tool in ("Xvfb", "xdotool"):
        if shutil.which(tool) is None:
            missing(f"{tool} (apt-get install xvfb xdotool)")
    display = ":96"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    folder = tmp_path / "run"
    # No sandbox flags given: as root (this machine's tests, a Docker image) the command copes itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QTWEBENGINE_")}
    env.update(DISPLAY=display, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    window = subprocess.Popen([sys.executable, "-m", "gemma_tui", "desktop", "--preset", "nano", "--output_dir",
                               str(folder), "--train_dataset_path", str(data), "--device", "cpu",
                               "--max_steps", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    printed = Lines(window.stdout)

    def found() -> list[str]:
        return subprocess.run(["xdotool", "search", "--name", "^Gemma Studio$"], capture_output=True, text=True,
                              env=env).stdout.split()

    try:
        wait_until(lambda: found() or window.poll() is not None, 180, "the window")
        assert window.poll() is None, window.stderr.read()
        geometry = subprocess.run(["xdotool", "getwindowgeometry", found()[0]], capture_output=True, text=True,
                                  env=env).stdout
        assert "Geometry: 1728x972" in geometry  # 90 % of the 1920 x 1080 screen
        printed.wait_for(r"another view: gemma-tui serve")
        wait_until(lambda: status(folder).get("step", 0) >= 2, 120, "the run")
        window.send_signal(signal.SIGTERM)
        assert window.wait(60) == 130  # closed by a stop signal: interrupted; the run goes on
        errors = window.stderr.read()
        assert "Traceback" not in errors and "GTK" not in errors and "--no-sandbox" not in errors, errors
        if os.geteuid() == 0:
            assert "running as root" in errors and "sandbox" in errors
        assert not any("http://" in line for line in printed.lines)  # no link its window already used
        assert any("the run goes on" in line for line in printed.lines)
        step = status(folder)["step"]
        wait_until(lambda: status(folder)["step"] > step, 60, "training after the window closed")
    finally:
        if window.poll() is None:
            window.kill()
        if (folder / "server.json").exists():
            gemma("control", str(folder), "stop")
        xvfb.terminate()
        xvfb.wait(10)
