"""Reading a run folder's ``server.json`` and ``server.token`` as untrusted input.

A run folder may come from anywhere (an archive, a shared disk, another user), so nothing in
it is believed until checked, and every check happens before any connection is made:

* ``server.token`` is read only from a regular file of this user's, readable by nobody else
  (no symlink: it could point at another secret of this user's, which would then be sent as
  a bearer token), short, and one line of printable ASCII.
* ``server.json`` is a small regular JSON object; its ``url`` is plain HTTP to a loopback
  address or, for a run told to serve on another address (``--serve_host``), to an address
  of this very machine (one a socket can bind to; no name is looked up), so the key never
  leaves the machine. A run's own files are never refused by this: the server records the
  address it bound (and loopback when it bound every address).

A token that exists but is another user's (or unreadable) is not damage: that user's run is
live, and callers say so instead of calling it stopped.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gemma_core.errors import UserError
from gemma_core.folder_lock import LOCK_FILE, holder_of

ADDRESS_FILE = "server.json"
TOKEN_FILE = "server.token"
MAX_ADDRESS_BYTES = 64 << 10  # the server writes about 200 bytes
MAX_TOKEN_BYTES = 256  # the server writes 43 (secrets.token_urlsafe(32))
MAX_PID = 1 << 22  # Linux's largest pid_max; 0 and negatives would name process groups
_TOKEN = re.compile(r"[\x21-\x7e]+\n?")  # printable ASCII, no spaces, at most a final newline


class DamagedServerFiles(UserError):
    """server.json or server.token is not what a run's server writes: refused before any use."""


@dataclass(frozen=True)
class ServerFiles:
    info: dict  # server.json as read
    url: str  # checked: http to a loopback address, or to another address of this machine
    host: str
    port: int
    pid: int
    token: str | None  # None when this user may not read it: ``token_problem`` says why
    token_problem: str | None = None
    remote: bool = False  # the host is not loopback (the run was started with --serve_host)


def read_server_files(folder: Path) -> ServerFiles | None:
    """The run's checked server files; None when it has no server.json (it is not serving).
    ``DamagedServerFiles`` for files that are damaged or not to be trusted."""
    address = folder / ADDRESS_FILE
    raw = _read_regular_file(address, MAX_ADDRESS_BYTES)
    if raw is None:
        return None
    info = _json_object(address, raw)
    host, port = _checked_url(address, info.get("url"))
    pid = info.get("pid")
    if type(pid) is not int or not 1 <= pid <= MAX_PID:
        raise DamagedServerFiles(f"{address}: field 'pid' must be a process id, got {_shown(pid)}; "
                                 "the file is damaged: remove it if the run is not running")
    remote = not is_loopback_host(host)
    if remote and not is_this_machine(host):
        raise DamagedServerFiles(
            f"{address}: its url points at {host}, which is not this machine; refusing to send the run's key "
            f"there (remove {ADDRESS_FILE} if this is not your run)")
    try:
        token, problem = read_token(folder / TOKEN_FILE)
    except DamagedServerFiles:
        if not os.path.lexists(address):
            return None  # the run closed between the two reads: it removes server.json first
        raise
    return ServerFiles(info, info["url"], host, port, pid, token, problem, remote)


def read_token(path: Path) -> tuple[str | None, str | None]:
    """(token, None), or (None, why this user may not read it). Refuses a token file that could
    be another secret (a symlink, a file others can read) with ``DamagedServerFiles``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise DamagedServerFiles(f"{path}: missing beside server.json; the run's server writes both: remove "
                                 "server.json if the run is not running") from None
    except PermissionError:
        return None, "permission denied"
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DamagedServerFiles(f"{path}: is a symbolic link; a run's key is never one, so it is not "
                                     "read (remove it if this is not your run)") from None
        raise DamagedServerFiles(f"{path}: cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DamagedServerFiles(f"{path}: is not a regular file; a run's key is one")
        if info.st_uid != os.geteuid():
            return None, f"it belongs to user {_user_name(info.st_uid)}"
        if info.st_mode & 0o077:
            raise DamagedServerFiles(f"{path}: others may read it (mode {stat.S_IMODE(info.st_mode):04o}); "
                                     "a run's key is readable by its owner only (0600), so this one is not "
                                     "used")
        data = os.read(fd, MAX_TOKEN_BYTES + 1)
    except PermissionError:
        return None, "permission denied"
    except OSError as err:
        raise DamagedServerFiles(f"{path}: cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    text = data.decode("ascii", errors="replace")
    if len(data) > MAX_TOKEN_BYTES or not _TOKEN.fullmatch(text):
        raise DamagedServerFiles(f"{path}: is not a run's key (one line of at most {MAX_TOKEN_BYTES} "
                                 "printable characters); the file is damaged: remove it and server.json if the "
                                 "run is not running")
    return text.rstrip("\n"), None


def is_loopback_host(host: str) -> bool:
    """Only addresses that never leave this machine: 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_regular_file(path: Path, limit: int) -> bytes | None:
    """The file's bytes (None when it does not exist); refused when it is a symbolic link, not
    a regular file (a FIFO would block, a device never end) or larger than ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as err:
        why = "is a symbolic link, which is not followed" if err.errno == errno.ELOOP else \
            f"cannot be read ({err.strerror})"
        raise DamagedServerFiles(f"{path}: {why}" + ("; run this as the user who started the run"
                                                     if err.errno == errno.EACCES else "")) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DamagedServerFiles(f"{path}: is not a regular file")
        data = os.read(fd, limit + 1)
    except OSError as err:
        raise DamagedServerFiles(f"{path}: cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DamagedServerFiles(f"{path}: is larger than {limit:,} bytes; the file is damaged")
    return data


def _json_object(path: Path, raw: bytes) -> dict:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedServerFiles(f"{path}: is not valid JSON (or is nested too deep); the file is damaged: "
                                 "remove it if the run is not running") from None
    if not isinstance(data, dict):
        raise DamagedServerFiles(f"{path}: must be a JSON object, got {type(data).__name__}; the file is "
                                 "damaged")
    return data


def _checked_url(path: Path, url) -> tuple[str, int]:
    """(host, port) of a plain http://HOST:PORT address; anything else is refused."""
    bad = f"{path}: field 'url' must be http://HOST:PORT as the run's server writes it, got {_shown(url)}"
    if not isinstance(url, str) or len(url) > 300 or not url.isascii() or any(c <= " " for c in url):
        raise DamagedServerFiles(bad)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DamagedServerFiles(f"{bad} (the port must be 1 to 65535)") from None
    if (parts.scheme != "http" or not parts.hostname or port is None or not 1 <= port <= 65535
            or parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise DamagedServerFiles(bad)
    return parts.hostname, port


def is_this_machine(host: str) -> bool:
    """``host`` is an address of one of this machine's interfaces: a socket can bind to it.
    Never a name (nothing is looked up) and never the unspecified address (0.0.0.0, ::)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def run_alive(folder: Path, pid: int) -> bool:
    """Whether the run recorded in ``folder`` still lives: its process exists and, where the
    folder has a lock file, someone holds the lock (a run holds it until it ends, even under
    kill -9). A process id reused after a crash or a restart holds no lock: not the run."""
    if not process_alive(pid):
        return False
    if pid == os.getpid() or not os.path.lexists(Path(folder) / LOCK_FILE):
        return True
    return holder_of(folder) is not None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _user_name(uid: int) -> str:
    try:
        import pwd
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _shown(value) -> str:
    plain = isinstance(value, (str, int, float, bool, type(None)))
    text = json.dumps(value) if plain else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."
