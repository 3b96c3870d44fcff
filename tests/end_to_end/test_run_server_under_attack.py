"""A run's server faces anyone on the machine: connections by the thousand, compressed bombs,
malformed headers, hostile JSON, guessed keys. None of it may stop or slow the training, reach a
500, echo a credential, or put a traceback on the run's stderr."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works
from gemma_core.errors import UserError
from gemma_core.serve.openai_api import Limits
from gemma_core.serve.server import RunServer, read_server_files
from gemma_core.tokenizers.tokenizer import load_tokenizer
from tests.end_to_end.test_hostile_input import assert_one_line_refusal
from tests.end_to_end.test_run_service import gemma, live, wait_until

KEY = "k3y-that-is-long-enough-0123456789"


# ------------------------------------------------------------------ helpers
class StillRun:
    """A served run that answers nothing by itself: enough for the server's refusals."""

    trains = False
    model_config = SimpleNamespace(context_length=512, to_dict=lambda: {})
    tokenizer = load_tokenizer("shakespeare-4k")

    def snapshot(self):
        return SimpleNamespace(step=3, version=1, run_id="still", output_dir="")

    def subscribe(self, callback):
        return lambda: None

    def unsubscribe(self, callback) -> None:
        pass

    def chat(self, prompt, params, special_tokens=False):
        raise AssertionError("no request reaching the model was expected")


@pytest.fixture
def server():
    served = RunServer(StillRun(), "still", token=KEY, limits=Limits())
    served.start()
    try:
        yield served
    finally:
        served.close()


def exchange(url: str, request: bytes, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; (status, headers, body) of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
            head, _, body = received.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def post(url: str, path: str, body: bytes, key: str | None = KEY, headers: dict | None = None):
    fields = {"Host": "x", "Content-Type": "application/json", "Content-Length": str(len(body)),
              "Connection": "close", **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return exchange(url, head.encode("latin-1") + body)


def assert_openai_error(status: int, headers: dict, body: bytes, expected_status: int) -> dict:
    assert status == expected_status, body
    assert headers["content-type"].startswith("application/json"), body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


# ---------------------------------------------------------- compressed bodies
def bomb(encoding: str) -> bytes:
    zeros = b"\0" * (64 << 20)
    return gzip.compress(zeros, 9) if encoding == "gzip" else zlib.compress(zeros, 9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP", "br"])
def test_a_compressed_body_is_never_inflated_with_or_without_the_key(server, encoding, monkeypatch):
    import aiohttp.http_parser

    inflaters = []

    class Recorded(aiohttp.http_parser.ZLibDecompressor):
        def __init__(self, *args, **kwargs):
            inflaters.append(encoding)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(aiohttp.http_parser, "ZLibDecompressor", Recorded)
    body = bomb("gzip" if encoding.lower() == "gzip" else "deflate")
    started = time.monotonic()
    keyless = post(server.url, "/v1/completions", body, key=None, headers={"Content-Encoding": encoding})
    assert assert_openai_error(*keyless, 401)["code"] == "invalid_api_key"
    keyed = post(server.url, "/v1/completions", body, headers={"Content-Encoding": encoding})
    assert "compressed request bodies are not accepted" in assert_openai_error(*keyed, 415)["message"]
    assert time.monotonic() - started < 30
    assert inflaters == []


def test_the_event_loop_answers_others_while_bombs_arrive(server):
    body = bomb("gzip")
    stop = threading.Event()

    def bomber():
        while not stop.is_set():
            post(server.url, "/api/chat", body, key=None, headers={"Content-Encoding": "gzip"})

    threads = [threading.Thread(target=bomber, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            status, _, answer = exchange(server.url, f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                                     f"Bearer {KEY}\r\nConnection: close\r\n\r\n".encode())
            assert status == 200 and json.loads(answer)["data"][0]["id"] == "still@step-3"
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


# ------------------------------------------------------- malformed requests
SECRET = "sk-the-real-key-of-someone-else"


@pytest.mark.parametrize("request_bytes", [
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}{'x' * 9000}\r\n\r\n".encode(),
    f"GET /v1/models?key={SECRET}{'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {SECRET}\r\n\r\n".encode(),
    ("GET /v1/models HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: {SECRET}\r\n" for i in range(200)) + "\r\n").encode(),
    f"GET /v1/models {SECRET}\r\nHost: x\r\n\r\n".encode(),
    f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {SECRET}\r\n\r\n".encode(),
], ids=["control-character", "long-header", "long-request-line", "space-before-colon", "too-many-headers",
        "bad-version", "bad-length"])
def test_a_malformed_request_is_refused_in_openais_shape_without_echoing_it(server, request_bytes):
    status, headers, body = exchange(server.url, request_bytes)
    assert_openai_error(status, headers, body, 400)
    assert SECRET.encode() not in body and b"xxxx" not in body


def test_a_refused_key_is_never_echoed(server):
    status, headers, body = post(server.url, "/v1/completions", b"{}", key=SECRET)
    assert_openai_error(status, headers, body, 401)
    assert SECRET.encode() not in body


# ------------------------------------------------------------- hostile JSON
# Each endpoint's request, with TEXT, NUMBER and ANY where a hostile value goes.
TEMPLATES = {
    "/v1/completions": b'{"model": "still", "prompt": TEXT, "max_tokens": NUMBER, "user": ANY}',
    "/v1/chat/completions": b'{"model": "still", "messages": [{"role": "user", "content": TEXT}], '
                            b'"max_completion_tokens": NUMBER, "metadata": ANY}',
    "/api/chat": b'{"prompt": TEXT, "params": {"max_new_tokens": NUMBER, "seed": ANY}}',
}
HOSTILE = {
    "a 5,000-digit integer": {b"NUMBER": b"9" * 5000},
    "a 5,000-digit negative integer": {b"NUMBER": b"-" + b"1" * 5000},
    "nesting 100,000 deep": {b"ANY": b"[" * 100_000 + b"]" * 100_000},
    "nesting 500 deep": {b"ANY": b'{"a":' * 500 + b"1" + b"}" * 500},
    "a lone surrogate": {b"TEXT": b'"a\\ud800b"'},
    "a lone low surrogate": {b"TEXT": b'"\\udfff"'},
    "a lone surrogate in a key": {b"ANY": b'{"\\ud83d": 1}'},
    "NaN": {b"NUMBER": b"NaN"},
    "Infinity": {b"NUMBER": b"-Infinity"},
    "a float beyond range": {b"NUMBER": b"1e400"},
    "a key twice": {b"ANY": b'{"a": 1, "a": 2}'},
    "not UTF-8": {b"TEXT": b'"\xff\xfe"'},
}


def hostile_body(path: str, case: str) -> bytes:
    body = TEMPLATES[path]
    for slot, value in {b"TEXT": b'"x"', b"NUMBER": b"5", b"ANY": b"null", **HOSTILE[case]}.items():
        body = body.replace(slot, value)
    return body


@pytest.mark.parametrize("path", list(TEMPLATES))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_json_is_a_400_in_openais_shape_never_a_500(server, path, case):
    error = assert_openai_error(*post(server.url, path, hostile_body(path, case)), 400)
    assert "internal error" not in error["message"]
    assert len(error["message"]) < 300


def test_a_value_quoted_in_an_error_is_cut_short(server):
    body = json.dumps({"model": "still", "prompt": "x", "logit_bias": {str(i): 1 for i in range(20_000)}})
    error = assert_openai_error(*post(server.url, "/v1/completions", body.encode()), 400)
    assert error["param"] == "logit_bias" and len(error["message"]) < 300


# ------------------------------------------------------------------- flags
def test_an_address_that_cannot_be_served_names_the_callers_own_flag():
    with pytest.raises(UserError) as caught:
        RunServer(StillRun(), "still", host="999.1.1.1", limits=Limits(), flags=("--host", "--port")).start()
    message = str(caught.value)
    assert "--host" in message and "--serve_port" not in message and "--port" not in message
    with pytest.raises(UserError) as caught:
        RunServer(StillRun(), "still", host="999.1.1.1", limits=Limits(),
                  flags=("--serve_host", "--serve_port")).start()
    assert "choose another --serve_host" in str(caught.value)


def test_a_port_in_use_names_the_port_flag(server):
    with pytest.raises(UserError) as caught:
        RunServer(StillRun(), "still", port=urlsplit(server.url).port, limits=Limits(),
                  flags=("--host", "--port")).start()
    assert "choose another --port" in str(caught.value) and "--host" not in str(caught.value)


@pytest.mark.parametrize("key, expected", [
    (" ", "16 or more printable ASCII characters without spaces (what an HTTP header carries); got 1"),
    ("x", "got 1"), ("a" * 15, "got 15"),
    ("a key with spaces in it", "character 2 is not"), ("clé-with-an-accent-é", "printable ASCII"),
    ("tab\there-0123456789", "character 4 is not"), ("line\nbreak-0123456789", "character 5 is not"),
])
@pytest.mark.parametrize("source", ["--api-key", "GEMMA_STUDIO_API_KEY"])
def test_an_api_key_no_client_can_send_or_too_short_is_refused(key, expected, source, tmp_path, capsys,
                                                             monkeypatch):
    argv = ["serve", "--checkpoint", str(tmp_path)]
    if source == "--api-key":
        argv += ["--api-key", key]
    else:
        monkeypatch.setenv("GEMMA_STUDIO_API_KEY", key)
    code = main(argv)
    err = capsys.readouterr().err
    assert_one_line_refusal(code, err, expected)
    assert f"{source} must be 16 or more" in err and (len(key) < 3 or key not in err)


def test_an_empty_api_key_flag_is_refused_not_ignored(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEMMA_STUDIO_API_KEY", "a-key-from-the-environment")
    code = main(["serve", "--checkpoint", str(tmp_path), "--api-key", ""])
    assert_one_line_refusal(code, capsys.readouterr().err, "--api-key must be 16 or more printable ASCII")


# ------------------------------------------------------------------- login
def test_guessing_the_studio_pages_key_in_parallel_is_paced_per_client(tmp_path):
    aiohttp = pytest.importorskip("aiohttp")
    pytest.importorskip("textual_serve")
    from gemma_tui.browser import LOGIN_PACE_S, StudioPages

    async def scenario() -> None:
        pages = StudioPages(tmp_path, KEY, "127.0.0.1", 0)
        url = await pages.start()
        try:
            async with aiohttp.ClientSession() as session:
                async def guess(i: int) -> tuple[int, str | None]:
                    async with session.post(f"{url}/login", data={"key": f"guess-{i}"},
                                            allow_redirects=False) as answer:
                        return answer.status, answer.headers.get("Retry-After")

                started = time.monotonic()
                answers = await asyncio.gather(*(guess(i) for i in range(60)))
                assert time.monotonic() - started < 30
                tried = [a for a in answers if a[0] == 401]
                refused = [a for a in answers if a[0] == 429]
                assert len(tried) <= 2 and len(tried) + len(refused) == 60, answers
                assert all(int(after) >= 1 for _, after in refused)
                # Another client is not held back by this one's guesses.
                other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=other) as elsewhere:
                    async with elsewhere.post(f"{url}/login", data={"key": KEY},
                                              allow_redirects=False) as answer:
                        assert answer.status == 302
                # And this one, once it has waited, may try again: the right key works.
                await asyncio.sleep(LOGIN_PACE_S + 0.5)
                async with session.post(f"{url}/login", data={"key": KEY}, allow_redirects=False) as answer:
                    assert answer.status == 302
        finally:
            await pages.close()

    asyncio.run(scenario())


def test_a_flood_without_a_session_neither_takes_the_pages_descriptors_nor_closes_a_signed_in_page(tmp_path):
    aiohttp = pytest.importorskip("aiohttp")
    pytest.importorskip("textual_serve")
    from gemma_tui.browser import StudioPages

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        pages = StudioPages(tmp_path, KEY, "127.0.0.1", 0)
        url = await pages.start()
        parts = urlsplit(url)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/login", data={"key": KEY}, allow_redirects=False) as answer:
                assert answer.status == 302  # signed in: the session cookie is kept
            # A signed-in page holds a long request open, as its websocket does.
            slow = asyncio.ensure_future(session.get(f"{url}/missing-page-that-waits"))
            before = open_descriptors()
            held = []
            for _ in range(300):  # no session, no key: just connections, held
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect((parts.hostname, parts.port))
                held.append(sock)
                await asyncio.sleep(0)
            await asyncio.sleep(0.5)  # the server accepts (and closes) what it will
            try:
                # This process holds both ends: 300 of its own, and at most the cap and the
                # queue on the server's side (without the cap, 300 more).
                assert open_descriptors() - before < 300 + 200
                async with session.get(f"{url}/icon.png") as answer:
                    assert answer.status == 200  # the signed-in page is still answered
                async with aiohttp.ClientSession() as stranger:
                    async with stranger.get(url) as answer:
                        assert answer.status == 200 and "key" in (await answer.text()).lower()
            finally:
                for sock in held:
                    sock.close()
                slow.cancel()
                await pages.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------- floods
def descriptors_like_a_login_shell() -> None:
    """The run's process gets 1,024 descriptors, hard limit too: what many systems give."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def open_connections(url: str, count: int) -> list[socket.socket]:
    parts = urlsplit(url)
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect((parts.hostname, parts.port))
        except BlockingIOError:
            pass
        held.append(sock)
    return held


def logged_step(folder: Path) -> int:
    """The last step in the run's training log: read from its file, not asked of its server."""
    lines = (folder / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def test_a_flood_of_keyless_connections_never_stops_or_breaks_the_run(tmp_path):
    folder = tmp_path / "run"
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    process = subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--preset", "nano",
                                "--output_dir", str(folder), "--train_dataset_path", str(data), "--device", "cpu",
                                "--max_steps", "1000000", "--save_steps", "100000", "--eval_iters", "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=descriptors_like_a_login_shell)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: live(folder), timeout=300, what="the run to serve")
        url = read_server_files(folder)[0]["url"]
        held = open_connections(url, 1200)
        stop = threading.Event()

        def keep_flooding():  # and new ones keep coming, as fast as this machine makes them
            while not stop.is_set():
                for sock in open_connections(url, 50):
                    sock.close()

        flooder = threading.Thread(target=keep_flooding, daemon=True)
        flooder.start()
        try:
            before = logged_step(folder)
            wait_until(lambda: logged_step(folder) >= before + 5, timeout=120,
                       what="training to go on under the flood")
        finally:
            stop.set()
            flooder.join(60)
        # With the 1,200 still held, the run's owner is answered, and a checkpoint can be written.
        saved = gemma("control", str(folder), "save", timeout=300)
        assert saved.returncode == 0 and "checkpoint saved at step" in saved.stdout, saved.stderr
        assert len(os.listdir(f"/proc/{process.pid}/fd")) < 1024 - 256
        stopped = gemma("control", str(folder), "stop", timeout=300)
        assert stopped.returncode == 0, stopped.stderr
        assert process.wait(120) == 0
        err = process.stderr.read()
        assert "Traceback" not in err and "error" not in err.lower(), err
    finally:
        for sock in held:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait(60)
