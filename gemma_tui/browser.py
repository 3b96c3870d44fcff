"""The studio in a browser: every page is a studio attached to one run, served by textual-serve.

textual-serve starts the command it serves once per page (``gemma-tui attach DIR``) and
streams its terminal to xterm.js there. So closing a page closes only that view: the run
trains on in its own process, and two pages show the same run.

The page controls the run, so it is guarded: the address printed in the terminal carries
a key that works once and then lives only in a session cookie (HttpOnly, SameSite=Strict);
without it the page asks for the run's own key. The key is never written to a log, and
the page's source holds no key at all. The server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import secrets
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from aiohttp import web

from gemma_core.errors import UserError
from gemma_core.serve.connections import CappedSite, answering_with_key, connection_cap
from gemma_core.safe_text import printable

WEB_DIR = Path(__file__).resolve().parent / "web"  # the page, the key page and the icon
SESSION_COOKIE = "gemma_studio_session"
TITLE = "Gemma Studio"
PAGE_CPU_PACE_S = 4.0
LOGIN_PACE_S = 1.0  # one key tried per client address per this long: 60 guesses take a minute


class StudioPages:
    """An aiohttp app serving the studio for the run in ``run_dir`` (which must be live)."""

    def __init__(self, run_dir: Path, run_key: str, host: str, port: int) -> None:
        from textual_serve.server import Server

        # Each page's studio draws at half the terminal's pace while a CPU trains: the browser
        # repaints on the training's cores too (BENCHMARKS.md, "One browser page").
        command = (f"{shlex.quote(sys.executable)} -m gemma_tui attach {shlex.quote(str(run_dir))} "
                   f"--cpu-pace {PAGE_CPU_PACE_S:g}")
        self.run_dir = run_dir
        self.run_key = run_key
        self.host, self.port = host, port
        self.textual = Server(command, host=host, port=port, title=TITLE, templates_path=WEB_DIR)
        self.textual.on_startup = _quietly  # its banner names a port before one is chosen: ours says more
        self._links: set[str] = set()  # one-time keys of printed links
        self._sessions: set[str] = set()
        self._next_try: dict[str, float] = {}  # client address: when it may try a key again
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- links
    def new_link(self) -> str:
        """An address that opens the studio once (then its session cookie does)."""
        key = secrets.token_urlsafe(24)
        self._links.add(key)
        return f"{self.url}/?once={key}"

    # ------------------------------------------------------------- serving
    async def start(self) -> str:
        app = await self.textual._make_app()
        app.middlewares.append(self.guard)
        app.router.add_post("/login", self.login)
        app.router.add_get("/icon.png", self.icon)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        # Connections capped as the run's API caps them: a flood from anyone without a session
        # takes neither this server's descriptors nor the pages of those signed in.
        site = CappedSite(self._runner, self.host, self.port, connection_cap())
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise UserError(f"cannot serve on {self.host}:{self.port} ({err.strerror or err}); choose another "
                            "--port") from None
        bound = self._runner.addresses[0]
        host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --------------------------------------------------------------- guard
    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path in ("/login", "/icon.png"):
            return await handler(request)
        if request.cookies.get(SESSION_COOKIE) in self._sessions:
            if request.path == "/ws" and not _same_origin(request):
                return web.Response(status=403, text="this page belongs to another site")
            if request.path == "/":
                # The page's websocket address is built from this: whatever name the browser used.
                self.textual.public_url = f"{request.scheme}://{request.host}"
            with answering_with_key(request):  # a page's websocket is never closed to make room
                return await handler(request)
        once = request.query.get("once")
        if request.path == "/" and once is not None and once in self._links:
            self._links.discard(once)  # the link works once
            return self._signed_in()
        if request.path == "/":
            return _key_page(status=401 if once is not None else 200,
                             error="That link has been used already (it works once)." if once else "")
        return web.Response(status=401, text="open the studio's page first")

    def _signed_in(self) -> web.Response:
        session = secrets.token_urlsafe(32)
        self._sessions.add(session)
        response = web.Response(status=302, headers={"Location": "/"})  # the address bar loses the key
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/")
        return response

    async def login(self, request: web.Request) -> web.Response:
        """One key tried per client address per ``LOGIN_PACE_S``, however many are sent at once:
        those sent sooner are refused (429, Retry-After) without being tried."""
        address = request.remote or "unknown"
        wait = self._login_wait(address)
        if wait > 0:
            response = _key_page(status=429, error=f"Too many tries: wait {wait} s and try again.")
            response.headers["Retry-After"] = str(wait)
            return response
        form = await request.post()
        given = str(form.get("key", "")).strip()
        if given and hmac.compare_digest(given.encode("utf-8", "replace"), self.run_key.encode("utf-8")):
            self._next_try.pop(address, None)
            return self._signed_in()
        await asyncio.sleep(LOGIN_PACE_S)  # guessing keys is slow
        return _key_page(status=401, error="That is not the run's key.")

    def _login_wait(self, address: str) -> int:
        """Whole seconds ``address`` must wait before its next try (0: try now, and the slot is taken)."""
        now = time.monotonic()
        if len(self._next_try) > 10_000:  # many addresses: forget those free to try again
            self._next_try = {a: t for a, t in self._next_try.items() if t > now}
        next_try = self._next_try.get(address, 0.0)
        if next_try > now:
            return max(1, math.ceil(next_try - now))
        self._next_try[address] = now + LOGIN_PACE_S
        return 0

    async def icon(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "icon.png")


async def _quietly(app: web.Application) -> None:
    return None


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _key_page(status: int, error: str) -> web.Response:
    page = (WEB_DIR / "login.html").read_text(encoding="utf-8")
    block = f'<div class="error">{error}</div>' if error else ""
    return web.Response(text=page.replace("<!--error-->", block), status=status, content_type="text/html")


# ------------------------------------------------------------------- the run
def live_run_key(run_dir: Path) -> str:
    """The key of the live run in ``run_dir``; a one-line error when it is not running."""
    from gemma_core.serve.client import connect

    client = connect(run_dir)
    return client.token


def start_run_in_background(train_args: list[str], output_dir: Path) -> int:
    """``gemma-core train ARGS`` in a session of its own (its output in the run's train.log);
    returns its process id once it serves, or fails in one line."""
    import contextlib
    import os
    import subprocess

    from gemma_core.serve.server import read_server_files

    output_dir.mkdir(parents=True, exist_ok=True)
    log = output_dir / "train.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gemma_core", "train", *train_args],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                   close_fds=True, env=dict(os.environ))
    deadline, serving = time.monotonic() + 600, False
    try:
        while time.monotonic() < deadline:
            found = read_server_files(output_dir)
            serving = found is not None and found[0].get("pid") == process.pid
            if serving:
                return process.pid
            if process.poll() is not None:
                last = [line for line in log.read_text(errors="replace").splitlines()
                        if line.startswith("error:")]
                raise UserError(last[-1][len("error: "):] if last else
                                f"the run stopped as it started (exit status {process.returncode}); see {log}")
            time.sleep(0.2)
        raise UserError(f"the run did not start serving within 10 minutes, so it was stopped; see {log}")
    finally:
        # Not serving, for whatever reason (Ctrl-C too): a run in a session of its own would
        # train on unseen and unasked for. SIGTERM: it stops as from Ctrl-C, with a checkpoint.
        if not serving and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=120)


def serve_in_browser(run_dir: Path, host: str, port: int, stop_on_exit: bool,
                     stop: threading.Event | None = None, on_link=None, started_here: bool = False) -> int:
    """Serve the studio until Ctrl-C, SIGTERM or ``stop``; the run goes on unless ``stop_on_exit``.

    ``on_link(url)`` is called with the printed link once the server listens (the desktop
    window opens it). ``started_here``: the run was started for these pages, so if they
    cannot be served the error says that it trains on, and how to stop or watch it."""
    from gemma_core.errors import EXIT_INTERRUPTED
    from gemma_core.serve.server import is_loopback

    stop = stop if stop is not None else threading.Event()

    async def start() -> StudioPages:
        pages = StudioPages(run_dir, live_run_key(run_dir), host, port)
        try:
            await pages.start()
        except UserError as err:
            if not started_here:
                raise
            raise UserError(f"{err}; the run started for these pages trains on in {run_dir}: stop it with "
                            f"gemma-core control {run_dir} stop, or watch it with gemma-tui serve {run_dir} "
                            f"(or gemma-tui attach {run_dir})") from None
        return pages

    async def main() -> None:
        pages = await start()
        if not is_loopback(host):
            print(f"warning: listening on {host}: anyone who can reach this port and has a link or the run's "
                  "key controls the run", file=sys.stderr)
        link = pages.new_link()
        print(printable(f"{TITLE} for {run_dir}: open {link}"))
        print("(the link works once; Ctrl+C stops serving, "
              + ("and the run with a checkpoint)" if stop_on_exit else "and the run goes on)"), flush=True)
        if on_link is not None:
            on_link(pages.new_link())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: ``stop`` ends it
                pass
        try:
            while not stop.is_set():
                await asyncio.sleep(0.2)
        finally:
            await pages.close()

    asyncio.run(main())
    if stop_on_exit:
        stop_the_run(run_dir)
    return EXIT_INTERRUPTED


def stop_the_run(run_dir: Path) -> None:
    """Stop the live run with a checkpoint, waiting for it; say so."""
    from gemma_core.serve.client import RunNotRunning, connect

    try:
        outcome = connect(run_dir).command("stop")
    except RunNotRunning:
        return
    where = f"; checkpoint in {outcome.checkpoint}" if getattr(outcome, "checkpoint", None) else ""
    print(printable(f"stopped the run at step {outcome.step:,}{where}"))
