"""A run's server in a background thread: the run's API on its own event loop, its address
and token in the run folder for clients on this machine to find.

    run folder/
      server.json    {"url", "pid", "host", "started", "run_id"}: where to find the server
      server.token   the secret every request needs; readable by its owner only (0600)

Both files are removed when the server closes. A killed process leaves them behind;
clients recognise that (the process is gone, nothing answers) and say so.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from aiohttp import web

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.run.handle import LocalRun
from gemma_core.serve.app import RunService, build_app, serving_files
from gemma_core.serve.connections import CappedSite, connection_cap
from gemma_core.serve.openai_api import Limits
from gemma_core.serve import server_files

LOOPBACK = "127.0.0.1"
MIN_KEY_CHARS = 16  # a key is a password no one types: 16 random characters are out of reach of guessing


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_api_key(key: str, source: str) -> str:
    """``key`` if a client can send it as a bearer token and it is long enough to be a key;
    else a ``UserError`` naming ``source`` (a flag or variable) and never showing the key."""
    rule = (f"{source} must be {MIN_KEY_CHARS} or more printable ASCII characters without spaces "
            "(what an HTTP header carries)")
    if len(key) < MIN_KEY_CHARS:
        raise UserError(f"{rule}; got {len(key)}, leave it out and a key is made for you")
    bad = next((i for i, c in enumerate(key) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise UserError(f"{rule}; character {bad + 1} is not")
    return key


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class RunServer:
    """Serves ``run`` on ``host:port`` (port 0: any free one) until ``close``. ``flags`` name
    the options that chose the host and the port, for the error when neither can be served."""

    def __init__(self, run: LocalRun, name: str, *, host: str = LOOPBACK, port: int = 0,
                 token: str | None = None, folder: Path | None = None, limits: Limits,
                 telemetry=None, flags: tuple[str, str] = ("host", "port")) -> None:
        self.host, self.port = host, port
        self.flags = flags
        self.token = token or new_token()
        self.folder = folder  # where server.json and server.token go (None: nowhere)
        self.service = RunService(run, name, self.token, limits, telemetry)
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> str:
        """Bind and serve in a background thread; returns the URL. A port in use is one line."""
        self._thread = threading.Thread(target=self._serve, name="gemma-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise self._failure
        if self.folder is not None:
            self._write_files()
        return self.url

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_about_clients)
        try:
            self._runner = web.AppRunner(build_app(self.service), handle_signals=False, access_log=None,
                                         shutdown_timeout=2.0)
            loop.run_until_complete(self._runner.setup())
            site = CappedSite(self._runner, self.host, self.port, connection_cap())
            loop.run_until_complete(site.start())
            bound = self._runner.addresses[0]
            host = _reachable_here(bound[0])
            host = f"[{host}]" if ":" in host else host
            self.url = f"http://{host}:{bound[1]}"
        except OSError as err:
            self._failure = UserError(self._cannot_serve(err))
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def _cannot_serve(self, err: OSError) -> str:
        host_flag, port_flag = self.flags
        where = f"cannot serve on {self.host}:{self.port} ({err.strerror or err})"
        if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
            return (f"{where}: that is not an address of this machine; choose another {host_flag} "
                    "(127.0.0.1: this machine only)")
        if err.errno == errno.EADDRINUSE:
            return f"{where}: the port is in use; choose another {port_flag} (0: any free one)"
        if err.errno == errno.EACCES:
            return (f"{where}: ports below 1024 need privileges; choose {port_flag} 1024 or above "
                    "(0: any free one)")
        return f"{where}; choose another {host_flag} or {port_flag}"

    def close(self) -> None:
        """Stop serving (answering the long polls with the final snapshot) and remove the files."""
        if self.folder is not None:
            for path in serving_files(self.folder):
                path.unlink(missing_ok=True)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            thread.join(timeout=10)

    def _write_files(self) -> None:
        address, token_file = serving_files(self.folder)
        # The token first, readable by this user only; then the address that points to it.
        tmp = token_file.with_name(f".{token_file.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.token.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, token_file)
        snap = self.service.run.snapshot()
        atomic.write_json(address, {"url": self.url, "pid": os.getpid(), "host": socket.gethostname(),
                                    "started": time.time(), "run_id": snap.run_id,
                                    "python": sys.executable})


def _reachable_here(bound: str) -> str:
    """The address clients on this machine use: the bound one, or loopback when every address
    was bound (0.0.0.0, ::), which is what server.json records for them."""
    try:
        address = ipaddress.ip_address(bound)
    except ValueError:
        return bound
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return bound


def _quiet_about_clients(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A client's broken connection (or a flood's) is no error of the run: nothing on its stderr."""
    if isinstance(context.get("exception"), OSError):
        return
    loop.default_exception_handler(context)


def read_server_files(folder: Path) -> tuple[dict, str] | None:
    """(server.json, token) of a run folder, or None when it has none. Files that are damaged,
    or not to be trusted (see ``server_files``), are a ``UserError`` naming the file."""
    found = server_files.read_server_files(folder)
    if found is None:
        return None
    if found.token is None:
        raise UserError(f"{folder / server_files.TOKEN_FILE}: the run's key is not readable by this user "
                        f"({found.token_problem})")
    return found.info, found.token
