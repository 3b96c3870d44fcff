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
import re
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
    """An aiohttp app serving the studio for the run in ``run_dir``: attached to it while it
    is live (``run_key``: its key), read-only as ``gemma-tui open`` shows it once it has ended
    (``run_key`` None: a run that had ended before serving began has no key, only links)."""

    def __init__(self, run_dir: Path, run_key: str | None, host: str, port: int) -> None:
        from textual_serve.server import Server

        self.run_dir = run_dir
        self.run_key = run_key
        self.ended = run_key is None
        self.host, self.port = host, port
        self.textual = Server(self._page_command(), host=host, port=port, title=TITLE, templates_path=WEB_DIR)
        self.textual.on_startup = _quietly  # its banner names a port before one is chosen: ours says more
        self._links: set[str] = set()  # one-time keys of printed links
        self._sessions: set[str] = set()
        self._next_try: dict[str, float] = {}  # client address: when it may try a key again
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    def _page_command(self) -> str:
        """What each new page runs: textual-serve starts it once per page."""
        folder = shlex.quote(str(self.run_dir))
        if self.ended:
            return f"{shlex.quote(sys.executable)} -m gemma_tui open {folder}"
        # Each page's studio draws at half the terminal's pace while a CPU trains: the browser
        # repaints on the training's cores too (BENCHMARKS.md, "One browser page").
        return f"{shlex.quote(sys.executable)} -m gemma_tui attach {folder} --cpu-pace {PAGE_CPU_PACE_S:g}"

    def show_finished(self) -> None:
        """The run has ended: pages opened from now on show it read-only (open pages, when
        their studio ends with the run, offer to open again)."""
        self.ended = True
        self.textual.command = self._page_command()

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
            return self._key_page(status=401 if once is not None else 200,
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
            response = self._key_page(status=429, error=f"Too many tries: wait {wait} s and try again.")
            response.headers["Retry-After"] = str(wait)
            return response
        form = await request.post()
        given = str(form.get("key", "")).strip()
        if (given and self.run_key is not None
                and hmac.compare_digest(given.encode("utf-8", "replace"), self.run_key.encode("utf-8"))):
            self._next_try.pop(address, None)
            return self._signed_in()
        await asyncio.sleep(LOGIN_PACE_S)  # guessing keys is slow
        return self._key_page(status=401, error="That is not the run's key.")

    def _key_page(self, status: int, error: str) -> web.Response:
        """The page asking for the run's key; once the run has ended its key file is gone, so
        the page says so and points to the printed links instead."""
        if not self.ended:
            how = ("This page controls a training run. Open the link the terminal printed, or give the "
                   "run's key (in its folder's <code>server.token</code>).")
        elif self.run_key is not None:
            how = ("The run has ended: this server shows it read-only, as <code>gemma-tui open</code> does. "
                   "Open the link <code>gemma-tui serve</code> printed when the run ended, or give the key "
                   "the run had (its <code>server.token</code> went with the run).")
        else:
            how = ("This run has ended: this server shows it read-only, as <code>gemma-tui open</code> does. "
                   "Open the link <code>gemma-tui serve</code> printed (each works once).")
        return _key_page(status, error, how, ask_key=self.run_key is not None)

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


def _key_page(status: int, error: str, how: str, ask_key: bool) -> web.Response:
    page = (WEB_DIR / "login.html").read_text(encoding="utf-8")
    block = f'<div class="error">{error}</div>' if error else ""
    page = page.replace("<!--how-->", how).replace("<!--error-->", block)
    if not ask_key:  # no key opens these pages: only a printed link does
        page = re.sub(r"<!--key-->.*<!--/key-->", "", page, flags=re.S)
    return web.Response(text=page, status=status, content_type="text/html")


# ------------------------------------------------------------------- the run
RUN_WATCH_S = 1.0  # how often serving looks whether the run still lives (a file read, no request)
WEIGHTS_FILE = "model.safetensors"  # model_dir.WEIGHTS_FILE, what gemma-tui open loads (not imported: torch)


def run_key_or_ended(run_dir: Path) -> str | None:
    """The key of the live run in ``run_dir``, or None when its run has ended and it can be shown
    read-only (as ``gemma-tui open`` shows it); a one-line error for anything else."""
    from gemma_core.run.status import status_from_files
    from gemma_core.serve.client import ProcessGone, RunNotRunning, connect

    try:
        return connect(run_dir).token
    except RunNotRunning as err:
        status_from_files(run_dir, died=isinstance(err, ProcessGone))  # a folder without a run is said here
        if not (run_dir / WEIGHTS_FILE).is_file():
            raise UserError(f"{err}; and it has no weights to show ({run_dir / WEIGHTS_FILE}): resume it with "
                            f"gemma-core train --resume --output_dir {run_dir}, then serve it") from None
        return None


def run_has_ended(run_dir: Path) -> bool:
    """Whether the run served is gone: its server files removed, or its process dead. Damaged
    files are not an ending: the pages' own studios say what is wrong with them."""
    from gemma_core.serve import server_files

    try:
        found = server_files.read_server_files(run_dir)
    except (UserError, OSError):
        return False
    return found is None or not server_files.run_alive(run_dir, found.pid)


def how_it_ended(run_dir: Path) -> str:
    """``finished at step 1,000`` (or stopped, died), from the run's files."""
    from gemma_core.run.status import status_from_files

    try:
        status = status_from_files(run_dir, died=False)
    except UserError:
        return "ended"
    return f"{status['state']} at step {status['step']:,}"


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
        pages = StudioPages(run_dir, run_key_or_ended(run_dir), host, port)
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
            print(f"warning: listening on {host}: anyone who can reach this port and has a link"
                  + (" sees the run" if pages.ended else " or the run's key controls the run"), file=sys.stderr)
        if on_link is not None:
            on_link(pages.new_link())
            # The window has used its own link: print what opens another view instead.
            print(printable(f"{TITLE} for {run_dir} in a window; another view: gemma-tui serve {run_dir} (a "
                            f"browser page) or gemma-tui attach {run_dir} (this terminal)"), flush=True)
        else:
            ended = f" (the run has {how_it_ended(run_dir)}: shown read-only)" if pages.ended else ""
            print(printable(f"{TITLE} for {run_dir}{ended}: open {pages.new_link()}"))
            then = ("" if pages.ended else ", and the run with a checkpoint" if stop_on_exit else
                    ", and the run goes on")
            print(f"(the link works once; Ctrl+C stops serving{then})", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: ``stop`` ends it
                pass
        try:
            next_look = 0.0
            while not stop.is_set():
                if not pages.ended and time.monotonic() >= next_look:
                    next_look = time.monotonic() + RUN_WATCH_S
                    if await asyncio.to_thread(run_has_ended, run_dir):
                        pages.show_finished()
                        say_the_run_ended(pages, on_link is None)
                await asyncio.sleep(0.2)
        finally:
            await pages.close()

    asyncio.run(main())
    if stop_on_exit:
        stop_the_run(run_dir)
    return EXIT_INTERRUPTED


def say_the_run_ended(pages: StudioPages, with_link: bool) -> None:
    """The run's key file went with the run: say it ended, and give a link to its read-only view."""
    link = f": open {pages.new_link()} (works once)" if with_link else " (the window's Open it again)"
    print(printable(f"the run in {pages.run_dir} has {how_it_ended(pages.run_dir)}; its pages now show it "
                    f"read-only, as gemma-tui open {pages.run_dir} does{link}"), flush=True)


def stop_the_run(run_dir: Path) -> None:
    """Stop the live run with a checkpoint, waiting for it; say so."""
    from gemma_core.serve.client import RunNotRunning, connect

    try:
        outcome = connect(run_dir).command("stop")
    except RunNotRunning:
        return
    where = f"; checkpoint in {outcome.checkpoint}" if getattr(outcome, "checkpoint", None) else ""
    print(printable(f"stopped the run at step {outcome.step:,}{where}"))
