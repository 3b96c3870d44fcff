"""A run folder's files are untrusted input: a folder may be planted, damaged, another user's, or
name a port where something else now answers. status, control, attach and the run picker read
``server.json`` and ``server.token`` with suspicion: a key is sent only from a file that can be
nothing but this user's run key, only to this machine (or to the very host the run recorded),
every answer is bounded in time and bytes, and a live run is never called dead because it is slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gemma_core.errors import UserError
from gemma_core.serve.catalog import find_runs
from gemma_core.serve.client import connect
from gemma_tui.run_picker import row_of
from tests.end_to_end.cli_in_process import TEST_THREAD, run_cli, run_cli_together

SECRET = "SECRET-the-users-other-key-0123456789"
TOKEN = "aValidLookingRunKey_0123456789abcdefghijklm"
RUN_CONFIG = {"vocab_size": 320, "emb_dim": 64, "n_layers": 2, "training": {"max_steps": 100}}
DEADLINE_S = 90  # a bounded command finishes well inside this, even on a busy machine


# ------------------------------------------------------------------- helpers
def gemma(*args: str, tool: str = "gemma_core", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True, timeout=180,
                          env=env, stdin=subprocess.DEVNULL, check=False)


def assert_one_line_refusal(result: subprocess.CompletedProcess, *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in expected:
        assert fragment in lines[0], lines[0]


def make_run(folder: Path, **training) -> Path:
    """A run folder as training leaves it before its first checkpoint (config.json only)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(RUN_CONFIG, training={**RUN_CONFIG["training"], **training})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def write_token(folder: Path, text: str = TOKEN, mode: int = 0o600) -> Path:
    path = folder / "server.token"
    path.write_text(text, encoding="ascii", newline="")
    path.chmod(mode)
    return path


def write_address(folder: Path, url: str, pid: int | None = None) -> None:
    (folder / "server.json").write_text(json.dumps({"url": url, "pid": os.getpid() if pid is None else pid,
                                                    "host": socket.gethostname(), "run_id": "planted"}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(60)
    return process.pid


class FakeServer:
    """Something that is not the run, listening on loopback where server.json points: it records
    every byte it receives and answers as told."""

    def __init__(self, answer=b"") -> None:
        self.answer = answer  # bytes, or a callable(connection) that writes its own answer
        self.received = bytearray()
        self.connections = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        threading.Thread(target=self._serve, name=f"{TEST_THREAD}fake server", daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), name=f"{TEST_THREAD}fake server answer",
                             daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(2)
        try:
            try:
                while b"\r\n\r\n" not in self.received:
                    data = connection.recv(65536)
                    if not data:
                        break
                    self.received += data
            except OSError:
                pass
            if callable(self.answer):
                self.answer(connection, self._closed)
            else:
                connection.sendall(self.answer)
        except OSError:
            pass
        finally:
            connection.close()

    def close(self) -> None:
        self._closed.set()
        self._socket.close()


def http_answer(body: bytes, status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def trickle_forever(connection: socket.socket, closed: threading.Event) -> None:
    """Headers, then a byte of a JSON body every tenth of a second, for ever."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
    while not closed.wait(0.1):
        connection.sendall(b"1,")


def flood_forever(connection: socket.socket, closed: threading.Event) -> None:
    """An endless body, as fast as it is read."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
    chunk = b"1," * 32768
    while not closed.is_set():
        connection.sendall(chunk)


def never_answer(connection: socket.socket, closed: threading.Event) -> None:
    closed.wait(DEADLINE_S * 2)


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def start(answer=b"") -> FakeServer:
        servers.append(FakeServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def timed(*args: str, tool: str = "gemma_core") -> subprocess.CompletedProcess:
    """The command, run in this process (as a subprocess would see it), within DEADLINE_S."""
    started = time.monotonic()
    result = run_cli(*args, tool=tool, deadline_s=DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S, f"{args} took {time.monotonic() - started:.0f} s"
    return result


def timed_together(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Several commands at once: each waits out the same silent server, in parallel."""
    started = time.monotonic()
    results = run_cli_together(*commands, deadline_s=DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S, f"{commands} took {time.monotonic() - started:.0f} s"
    return results


# ------------------------------------------------------- a planted run folder
COMMANDS = [
    ("status", lambda folder: timed("status", str(folder))),
    ("control", lambda folder: timed("control", str(folder), "save")),
    ("attach", lambda folder: timed("attach", str(folder), tool="gemma_tui")),
]


@pytest.mark.parametrize("command", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_a_symlinked_token_is_never_read_or_sent(tmp_path, fake_server, command):
    secret = tmp_path / "other-secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(tmp_path / "planted")
    (folder / "server.token").symlink_to(secret)
    write_address(folder, listener.url)
    assert_one_line_refusal(command(folder), "server.token", "symbolic link")
    assert listener.connections == 0 and SECRET.encode() not in listener.received


def test_the_picker_never_sends_a_symlinked_token_and_lists_the_run_as_unreadable(tmp_path, fake_server):
    secret = tmp_path / "other-secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(tmp_path / "runs" / "planted")
    (folder / "server.token").symlink_to(secret)
    write_address(folder, listener.url)
    [entry] = find_runs(tmp_path / "runs")
    assert not entry.opens and "symbolic link" in entry.problem
    assert row_of(entry, tmp_path / "runs")[1] == "unreadable"
    assert listener.connections == 0


OFF_THIS_MACHINE = ["http://203.0.113.7:8080", "http://example.com:80", "http://127.attacker.example:80",
                    "http://[2001:db8::1]:8000", "http://0.0.0.0:8000", "http://10.0.0.1:443"]


@pytest.mark.parametrize("url", OFF_THIS_MACHINE)
def test_a_server_json_pointing_off_this_machine_is_refused_before_any_connection(tmp_path, url):
    folder = make_run(tmp_path / "planted")
    write_token(folder, SECRET)
    write_address(folder, url)
    # In this process the test's socket guard raises NetworkBlocked on any attempt: a refusal
    # that is a UserError proves none was made.
    with pytest.raises(UserError, match="server.json: its url points at .* not this machine"):
        connect(folder)
    [entry] = find_runs(folder)
    assert "not this machine" in entry.problem
    assert_one_line_refusal(timed("status", str(folder)), "server.json", "not this machine")
    assert_one_line_refusal(timed("control", str(folder), "pause"), "server.json", "not this machine")


def test_a_run_serving_on_another_address_of_this_machine_is_reached_only_after_saying_so(tmp_path,
                                                                                         monkeypatch):
    from gemma_core.serve import server_files

    # 203.0.113.7 stands for a non-loopback address of this machine (the test's guard still
    # refuses to connect to it, which shows the client was allowed to try).
    monkeypatch.setattr(server_files, "is_this_machine", lambda host: host == "203.0.113.7")
    folder = make_run(tmp_path / "remote", serve_host="203.0.113.7")
    write_token(folder)
    write_address(folder, "http://203.0.113.7:8080")
    said: list[str] = []
    with pytest.raises(RuntimeError, match="must not use the network"):
        connect(folder, announce=said.append)
    assert said == ["talking to the run at 203.0.113.7, an address of this machine it serves on (--serve_host)"]
    [entry] = find_runs(folder)  # the picker does not reach out to another address unasked
    assert not entry.opens and "--serve_host" in entry.problem
    write_address(folder, "http://203.0.113.8:8080")  # not an address of this machine
    with pytest.raises(UserError, match="not this machine"):
        connect(folder, announce=said.append)
    assert len(said) == 1


def test_only_addresses_a_socket_here_can_bind_count_as_this_machine():
    from gemma_core.serve.server_files import is_this_machine

    assert is_this_machine("127.0.0.1") and is_this_machine("127.0.0.2")
    for elsewhere in ("203.0.113.7", "10.255.255.254", "0.0.0.0", "::", "example.com", "224.0.0.1"):
        assert not is_this_machine(elsewhere), elsewhere


def test_a_server_bound_to_every_address_records_loopback_for_this_machines_clients():
    from gemma_core.serve.server import _reachable_here

    assert _reachable_here("0.0.0.0") == "127.0.0.1" and _reachable_here("::") == "::1"
    assert _reachable_here("192.0.2.5") == "192.0.2.5" and _reachable_here("127.0.0.1") == "127.0.0.1"


# ------------------------------------------------------ damaged server files
def deep(n: int) -> str:
    return "[" * n + "]" * n


DAMAGED_ADDRESS = [
    ("not JSON", "{url: nope"),
    ("a list", json.dumps(["http://127.0.0.1:8000"])),
    ("a list nested thirty thousand deep", deep(30_000)),
    ("an object nested deeper than Python recurses", '{"url": ' + deep(20_000) + "}"),
    ("a file URL", json.dumps({"url": "file:///etc/passwd", "pid": os.getpid()})),
    ("port 99999", json.dumps({"url": "http://127.0.0.1:99999", "pid": os.getpid()})),
    ("port 0", json.dumps({"url": "http://127.0.0.1:0", "pid": os.getpid()})),
    ("no port", json.dumps({"url": "http://127.0.0.1", "pid": os.getpid()})),
    ("https", json.dumps({"url": "https://127.0.0.1:8000", "pid": os.getpid()})),
    ("a URL with a newline", json.dumps({"url": "http://127.0.0.1:8000\nHost: x", "pid": os.getpid()})),
    ("a URL with credentials", json.dumps({"url": "http://me:pw@127.0.0.1:8000", "pid": os.getpid()})),
    ("a URL that is a number", json.dumps({"url": 8000, "pid": os.getpid()})),
    ("no pid", json.dumps({"url": "http://127.0.0.1:8000"})),
    ("pid 0 (the process group)", json.dumps({"url": "http://127.0.0.1:8000", "pid": 0})),
    ("pid -1 (every process)", json.dumps({"url": "http://127.0.0.1:8000", "pid": -1})),
    ("a pid that is text", json.dumps({"url": "http://127.0.0.1:8000", "pid": "1"})),
    ("a file over 64 KiB", json.dumps({"url": "http://127.0.0.1:8000", "pid": 1, "pad": "x" * 70_000})),
]


@pytest.mark.parametrize("text", [c[1] for c in DAMAGED_ADDRESS], ids=[c[0] for c in DAMAGED_ADDRESS])
def test_a_damaged_server_json_is_one_line_naming_it_and_the_picker_lists_it(tmp_path, text):
    folder = make_run(tmp_path / "runs" / "damaged")
    write_token(folder)
    (folder / "server.json").write_text(text)
    assert_one_line_refusal(timed("status", str(folder)), "server.json")
    assert_one_line_refusal(timed("control", str(folder), "save"), "server.json")
    [entry] = find_runs(tmp_path / "runs")
    assert entry.state == "unreadable" and "server.json" in entry.problem


def special_address(kind: str):
    def make(folder: Path) -> None:
        target = folder / "server.json"
        if kind == "symlink":
            real = folder.parent / "elsewhere.json"
            real.write_text(json.dumps({"url": "http://127.0.0.1:8000", "pid": os.getpid()}))
            target.symlink_to(real)
        elif kind == "fifo":
            os.mkfifo(target)  # opening it for reading would wait for a writer for ever
        else:
            target.mkdir()
    return make


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_server_json_that_is_not_a_regular_file_is_refused_without_waiting(tmp_path, kind):
    folder = make_run(tmp_path / "runs" / "odd")
    write_token(folder)
    special_address(kind)(folder)
    assert_one_line_refusal(timed("status", str(folder)), "server.json")
    assert_one_line_refusal(timed("attach", str(folder), tool="gemma_tui"), "server.json")
    [entry] = find_runs(tmp_path / "runs")
    assert "server.json" in entry.problem


DAMAGED_TOKENS = [
    ("a multi-line token", TOKEN + "\nX-Injected: 1", 0o600),
    ("a CRLF token", TOKEN + "\r\n", 0o600),
    ("a token with a space", "two words", 0o600),
    ("an empty token", "", 0o600),
    ("a token over 256 bytes", "k" * 300, 0o600),
    ("a token others can read", TOKEN, 0o644),
    ("a token the group can read", TOKEN, 0o640),
    ("a token that is not ASCII", "clé-" + TOKEN, 0o600),
]


@pytest.mark.parametrize("text, mode", [c[1:] for c in DAMAGED_TOKENS], ids=[c[0] for c in DAMAGED_TOKENS])
def test_a_damaged_or_exposed_token_is_refused_before_anything_is_sent(tmp_path, fake_server, text, mode):
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(tmp_path / "runs" / "damaged")
    (folder / "server.token").write_bytes(text.encode("utf-8"))
    (folder / "server.token").chmod(mode)
    write_address(folder, listener.url)
    assert_one_line_refusal(timed("status", str(folder)), "server.token")
    assert_one_line_refusal(timed("control", str(folder), "stop"), "server.token")
    [entry] = find_runs(tmp_path / "runs")
    assert "server.token" in entry.problem
    assert listener.connections == 0


def test_a_token_that_is_a_fifo_is_refused_without_waiting(tmp_path, fake_server):
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(tmp_path / "run")
    os.mkfifo(folder / "server.token", 0o600)
    write_address(folder, listener.url)
    assert_one_line_refusal(timed("status", str(folder)), "server.token", "not a regular file")
    assert listener.connections == 0


# ------------------------------------------- something else on the recorded port
IMPOSTORS = [
    ("an empty object", http_answer(b"{}"), "something else answers on the port recorded in"),
    ("a list", http_answer(b"[1, 2, 3]"), "something else answers on the port recorded in"),
    ("a string", http_answer(b'"hello"'), "something else answers on the port recorded in"),
    ("an error whose error is a list", http_answer(b'{"error": [1]}', "500 Oops"), "something else answers"),
    ("HTML", http_answer(b"<html>hello</html>"), "something else answers on the port recorded in"),
    ("bytes that are not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n", "something else answers on the port recorded in"),
    ("an endless body", flood_forever, "more than"),
    ("a body announced at a gigabyte", b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n{",
     "1,073,741,824"),
]


@pytest.mark.parametrize("answer, expected", [c[1:] for c in IMPOSTORS], ids=[c[0] for c in IMPOSTORS])
def test_something_else_answering_on_the_recorded_port_is_named_in_bounded_time(tmp_path, fake_server, answer,
                                                                                 expected):
    listener = fake_server(answer)
    folder = make_run(tmp_path / "runs" / "run")
    write_token(folder)
    write_address(folder, listener.url)
    for result in (timed("status", str(folder)), timed("control", str(folder), "eval"),
                   timed("attach", str(folder), tool="gemma_tui")):
        assert_one_line_refusal(result, str(folder), expected)
    if "port recorded" in expected:
        assert_one_line_refusal(timed("status", str(folder)), str(folder / "server.json"))
    [entry] = find_runs(tmp_path / "runs")
    assert entry.state == "unreadable" and expected in entry.problem


def test_a_server_that_streams_forever_cannot_hold_status(tmp_path, fake_server):
    listener = fake_server(trickle_forever)
    folder = make_run(tmp_path / "runs" / "run")
    write_token(folder)
    write_address(folder, listener.url)  # its pid (this test's) is alive: slow, not dead
    status, control = timed_together(("status", str(folder), "--json"), ("control", str(folder), "save"))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "not answering"
    assert_one_line_refusal(control, "has not answered for")
    [entry] = find_runs(tmp_path / "runs")
    assert entry.state == "not answering" and not entry.opens


# ----------------------------------------------- slow is not dead, gone is gone
def test_a_live_run_whose_server_is_silent_is_not_answering_never_dead(tmp_path, fake_server):
    listener = fake_server(never_answer)
    folder = make_run(tmp_path / "run")
    write_token(folder)
    write_address(folder, listener.url, pid=os.getpid())
    as_json, text, control = timed_together(("status", str(folder), "--json"), ("status", str(folder)),
                                            ("control", str(folder), "pause"))
    status = json.loads(as_json.stdout)
    assert status["live"] and status["state"] == "not answering" and status["not_answering_s"] > 0
    assert "resume_command" not in status and "has not answered for" in status["problem"]
    assert "not answering" in text.stdout and "resume" not in text.stdout and "died" not in text.stdout
    assert_one_line_refusal(control, "the run is live", "has not answered for")
    assert "is gone" not in control.stderr and "resume it with" not in control.stderr


def test_a_live_process_is_never_said_to_be_gone(tmp_path):
    folder = make_run(tmp_path / "run")
    write_token(folder)
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    write_address(folder, f"http://127.0.0.1:{port}", pid=os.getpid())
    control = timed("control", str(folder), "save")
    assert control.returncode == 2 and f"pid {os.getpid()}) is gone" not in control.stderr
    assert "is alive" in control.stderr
    status = json.loads(timed("status", str(folder), "--json").stdout)
    assert status["state"] != "died" and "resume_command" not in status
    write_address(folder, f"http://127.0.0.1:{port}", pid=dead_pid())  # now it is gone
    dead = json.loads(timed("status", str(folder), "--json").stdout)
    assert dead["state"] == "died" and dead["resume_command"].startswith("gemma-core train")
    assert "is gone" in timed("control", str(folder), "save").stderr


def test_a_process_id_reused_by_another_program_is_not_the_run(tmp_path):
    folder = make_run(tmp_path / "run")
    write_token(folder)
    (folder / ".lock").write_text("{}", encoding="utf-8")  # left by the run; nobody holds it now
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    write_address(folder, f"http://127.0.0.1:{port}", pid=os.getppid())  # alive, but not the run
    dead = json.loads(timed("status", str(folder), "--json").stdout)
    assert dead["state"] == "died" and dead["resume_command"].startswith("gemma-core train")
    control = timed("control", str(folder), "save").stderr
    assert "not running" in control and "belongs to another program" in control and "is gone" not in control


def test_a_real_run_that_is_stopped_is_not_answering_and_goes_on_when_continued(tmp_path):
    from tests.end_to_end.test_run_service import live, start_run, wait_until

    folder = tmp_path / "run"
    process = start_run(folder, tmp_path / "cache")
    try:
        wait_until(lambda: live(folder), what="the run to serve")
        process.send_signal(signal.SIGSTOP)  # as a machine under load: alive, but its server silent
        as_json, control = timed_together(("status", str(folder), "--json"), ("control", str(folder), "pause"))
        status = json.loads(as_json.stdout)
        assert status["live"] and status["state"] == "not answering" and "resume_command" not in status
        assert "is gone" not in control.stderr
        process.send_signal(signal.SIGCONT)
        wait_until(lambda: json.loads(run_cli("status", str(folder), "--json").stdout)["state"] == "running",
                   120, "the run to answer again")
    finally:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


# ----------------------------------------------------- another user's run
def test_a_token_owned_by_another_user_means_live_and_not_this_users_key(tmp_path, fake_server):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(tmp_path / "run")
    token = write_token(folder, SECRET)
    os.chown(token, 65534, 65534)  # nobody's
    write_address(folder, listener.url, pid=os.getpid())
    status = json.loads(timed("status", str(folder), "--json").stdout)
    assert status["live"] and status["state"] == "live" and "resume_command" not in status
    assert "not readable by this user" in status["problem"]
    control = timed("control", str(folder), "save")
    assert_one_line_refusal(control, "the run is live", "not readable by this user")
    assert "no server.json" not in control.stderr and "stopped" not in control.stderr
    assert listener.connections == 0


def as_another_user() -> list[str]:
    """A command prefix that runs as a user who is not this one's (root reads everything)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads every file, and setpriv is not here to drop that")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def shared_folder():
    """A folder another user can reach (pytest's own are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="gemma-untrusted-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        try:
            path.chmod(0o755 if path.is_dir() else 0o644)
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def run_as_other(prefix: list[str], code: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"))
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=180, env=env, stdin=subprocess.DEVNULL, cwd=home, check=False)


CLI = "import sys; from gemma_core.cli import main; sys.argv[0] = 'gemma-core'; sys.exit(main(sys.argv[1:]))"
PICKER = ("import sys, json; from pathlib import Path; from gemma_core.serve.catalog import find_runs; "
          "print(json.dumps([[e.folder.name, e.state, e.problem] for e in find_runs(Path(sys.argv[1]))]))")


def test_another_users_live_run_is_live_with_a_key_this_user_cannot_read(shared_folder, fake_server):
    prefix = as_another_user()
    listener = fake_server(http_answer(b"{}"))
    folder = make_run(shared_folder / "runs" / "theirs")
    write_token(folder, SECRET)  # 0600, the run's owner's
    write_address(folder, listener.url, pid=os.getpid())
    home = shared_folder / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    status = run_as_other(prefix, CLI, "status", str(folder), "--json", home=home)
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert seen["live"] and seen["state"] == "live" and "not readable by this user" in seen["problem"]
    assert "resume_command" not in seen
    control = run_as_other(prefix, CLI, "control", str(folder), "save", home=home)
    assert_one_line_refusal(control, "the run is live", "not readable by this user")
    assert "no server.json" not in control.stderr
    assert listener.connections == 0


@pytest.mark.parametrize("unreadable", [".", "config.json", "training_log.jsonl", "checkpoint"])
def test_an_unreadable_run_folder_or_file_is_one_line_and_the_picker_lists_it(shared_folder, unreadable):
    prefix = as_another_user()
    folder = make_run(shared_folder / "runs" / "locked")
    (folder / "training_log.jsonl").write_text("")
    (folder / "checkpoint").mkdir()
    make_run(shared_folder / "runs" / "open")
    home = shared_folder / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    (folder / unreadable).chmod(0)
    status = run_as_other(prefix, CLI, "status", str(folder), home=home)
    named = folder if unreadable == "." else folder / unreadable
    assert_one_line_refusal(status, str(named), "permission denied")
    listed = run_as_other(prefix, PICKER, str(shared_folder / "runs"), home=home)
    assert listed.returncode == 0, listed.stderr
    entries = {name: (state, problem) for name, state, problem in json.loads(listed.stdout)}
    assert entries["locked"][0] == "unreadable" and "ermission denied" in entries["locked"][1]
    assert entries["open"][0] == "stopped"
