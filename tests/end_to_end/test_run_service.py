"""Runs as services: a run trained by one process is watched, steered and questioned by others on
the same machine (status, control, the studio attached, any OpenAI client), and nothing they do,
or fail to do, disturbs its training."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gemma_core.data.corpus import bundled_works
from gemma_core.serve.client import RemoteEngine, RunNotRunning, connect
from gemma_core.serve.server import read_server_files
from gemma_core.run.events import RunState
from tests.end_to_end.cli_in_process import run_cli

openai = pytest.importorskip("openai")


def gemma(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``gemma-core`` run in this process, as a subprocess would see it (see cli_in_process); with an
    environment of its own, in a process of its own."""
    if env is None:
        return run_cli(*args, deadline_s=timeout)
    return subprocess.run([sys.executable, "-m", "gemma_core", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_run(folder: Path, cache: Path, *extra: str) -> subprocess.Popen:
    data = folder.parent / "train.txt"
    if not data.exists():
        data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(cache))
    return subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--preset", "nano", "--output_dir",
                             str(folder), "--train_dataset_path", str(data), "--device", "cpu", "--max_steps",
                             "1000000", "--save_steps", "40", "--eval_iters", "100000", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_until(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def live(folder: Path) -> bool:
    try:
        return connect(folder).snapshot().step >= 3
    except Exception:
        return False


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A nano run in a process of its own, serving its API, for the tests that only read."""
    root = tmp_path_factory.mktemp("service")
    folder = root / "run"
    process = start_run(folder, root / "cache")
    try:
        wait_until(lambda: live(folder), what="the run to serve")
        yield folder
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def openai_client(folder: Path, key: str | None = None):
    info, token = read_server_files(folder)
    return openai.OpenAI(base_url=info["url"] + "/v1", api_key=key or token, max_retries=0)


# -------------------------------------------------------------- the OpenAI API
def test_the_openai_client_talks_to_a_live_run(running):
    client = openai_client(running)
    model = client.models.list().data[0].id
    assert model.startswith("run@step-")
    done = client.completions.create(model="run", prompt="ROMEO:", max_tokens=6, temperature=0, seed=1)
    assert done.model.startswith("run@step-") and done.usage.completion_tokens + done.usage.prompt_tokens == \
        done.usage.total_tokens
    assert done.choices[0].finish_reason in ("stop", "length")
    pieces = [c.choices[0].text for c in client.completions.create(
        model=model, prompt="KING:", max_tokens=6, stream=True, temperature=0.8, seed=2) if c.choices]
    assert len(pieces) >= 2
    chat = client.chat.completions.create(model="run", messages=[
        {"role": "system", "content": "A play."}, {"role": "user", "content": "Who goes there?"}],
        max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and isinstance(chat.choices[0].message.content, str)
    stream = client.chat.completions.create(model="run", messages=[{"role": "user", "content": "Speak."}],
                                            max_tokens=6, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_the_openai_client_talks_to_a_served_checkpoint(running, tmp_path):
    checkpoint = running  # a live run's folder is a checkpoint directory as well, once it has saved
    assert connect(running).command("save").step >= 1
    process = subprocess.Popen([sys.executable, "-m", "gemma_core", "serve", "--checkpoint", str(checkpoint),
                                "--port", "0", "--api-key", "secret-key-of-the-test"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert " on http://" in line, process.stderr.read()
        url = line.split(" on ")[1].strip()
        client = openai.OpenAI(base_url=url, api_key="secret-key-of-the-test", max_retries=0)
        reply = client.completions.create(model="run", prompt="KING:", max_tokens=5, temperature=0)
        assert reply.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130


def raw(folder: Path, method: str, path: str, body: bytes | None = None, token: str | None = None,
        headers: dict | None = None) -> tuple[int, dict, dict]:
    info, real = read_server_files(folder)
    parts = urlsplit(info["url"])
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token != "":
        sent["Authorization"] = f"Bearer {token or real}"
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(data) if data else {}


def completion(**fields) -> bytes:
    return json.dumps({"model": "run", "prompt": "KING:", "max_tokens": 3, **fields}).encode()


HOSTILE = [
    ("no key", "GET", "/v1/models", None, "", 401, "invalid_api_key"),
    ("a wrong key", "GET", "/v1/models", None, "not-the-key", 401, "invalid_api_key"),
    ("a body that is not JSON", "POST", "/v1/completions", b"{not json", None, 400, "not valid JSON"),
    ("a body that is a list", "POST", "/v1/completions", b"[1, 2]", None, 400, "must be a JSON object"),
    ("a prompt of the wrong type", "POST", "/v1/completions", completion(prompt=7), None, 400, "prompt"),
    ("an unknown field", "POST", "/v1/completions", completion(temprature=0.5), None, 400, "unknown field"),
    ("an unknown model", "POST", "/v1/completions", completion(model="gpt-4"), None, 404, "not served here"),
    ("too many choices", "POST", "/v1/completions", completion(n=99), None, 400, "n must be between 1 and 8"),
    ("a NaN temperature", "POST", "/v1/completions", b'{"model": "run", "prompt": "x", "temperature": NaN}',
     None, 400, "temperature"),
    ("too many tokens", "POST", "/v1/completions", completion(max_tokens=10**6), None, 400, "max_tokens"),
    ("more tokens than the context leaves", "POST", "/v1/completions", completion(max_tokens=2000), None, 400,
     "context"),
    ("a prompt longer than the context", "POST", "/v1/completions", completion(prompt="word " * 5000), None,
     400, "context"),
    ("a chat with no messages", "POST", "/v1/chat/completions",
     json.dumps({"model": "run", "messages": []}).encode(), None, 400, "messages"),
    ("a tool message", "POST", "/v1/chat/completions",
     json.dumps({"model": "run", "messages": [{"role": "tool", "content": "x"}]}).encode(), None, 400, "role"),
    ("a body over a mebibyte", "POST", "/v1/completions", b'{"prompt": "' + b"x" * (2 << 20) + b'"}', None,
     413, "larger than"),
    ("an unknown route", "GET", "/v1/engines", None, None, 404, "Not Found"),
    ("the wrong method", "GET", "/v1/completions", None, None, 405, "Method Not Allowed"),
    ("an unknown command", "POST", "/api/commands/explode", b"{}", None, 404, "unknown command"),
    ("a snapshot version that is not a number", "GET", "/api/snapshot?after=abc", None, None, 400, "after"),
]


@pytest.mark.parametrize("name, method, path, body, token, status, fragment", HOSTILE,
                         ids=[case[0] for case in HOSTILE])
def test_a_hostile_request_gets_a_clean_refusal_and_training_goes_on(running, name, method, path, body, token,
                                                                     status, fragment):
    before = connect(running).snapshot().step
    got, _, data = raw(running, method, path, body, token)
    assert got == status, data
    assert set(data) == {"error"} and fragment in json.dumps(data["error"])
    wait_until(lambda: connect(running).snapshot().step > before, 60, "training to go on")


# --------------------------------------------------------------------- clients
def test_status_and_control_steer_a_live_run_and_report_a_dead_one(tmp_path):
    folder = tmp_path / "run"
    process = start_run(folder, tmp_path / "cache")
    try:
        wait_until(lambda: live(folder), what="the run to serve")
        status = json.loads(gemma("status", str(folder), "--json").stdout)
        assert status["live"] and status["state"] == "running" and status["step"] >= 3
        paused = gemma("control", str(folder), "pause")
        assert paused.returncode == 0 and paused.stdout.startswith("paused at step")
        assert json.loads(gemma("status", str(folder), "--json").stdout)["state"] == "paused"
        saved = gemma("control", str(folder), "save")
        assert saved.returncode == 0 and "checkpoint saved at step" in saved.stdout
        evaluated = gemma("control", str(folder), "eval")
        assert evaluated.returncode == 0 and "val loss" in evaluated.stdout
        assert gemma("control", str(folder), "resume").stdout.startswith("running at step")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    dead = json.loads(gemma("status", str(folder), "--json").stdout)
    assert not dead["live"] and dead["state"] == "died"
    assert dead["resume_command"] == f"gemma-core train --resume --output_dir {folder}"
    refused = gemma("control", str(folder), "pause")
    assert refused.returncode == 2 and "the run is not running" in refused.stderr
    assert "gemma-core train --resume" in refused.stderr and "Traceback" not in refused.stderr


def test_two_attached_engines_see_the_same_run_and_one_pause_shows_in_both(running):
    first, second = RemoteEngine(running), RemoteEngine(running)
    try:
        wait_until(lambda: first.snapshot().step == second.snapshot().step or True)
        assert first.pause().result(timeout=60).state is RunState.PAUSED
        wait_until(lambda: second.snapshot().state is RunState.PAUSED, 30, "the pause in the other client")
        held = second.snapshot().step
        time.sleep(1.0)
        assert first.snapshot().step == second.snapshot().step == held
        second.unpause().result(timeout=60)
        wait_until(lambda: first.snapshot().step > held, 60, "training again")
        job = first.chat("ROMEO:", __import__("gemma_core").SamplingParams(max_new_tokens=5, temperature=0))
        assert job.wait(60) and job.error is None and job.step >= 0
    finally:
        first.close()
        second.close()


def test_a_cancelled_stream_frees_its_generation_at_once(running):
    info, token = read_server_files(running)
    parts = urlsplit(info["url"])
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request("POST", "/v1/completions", body=completion(max_tokens=200, stream=True),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.fp.readline()  # the first piece has come: the reply is being written
    connection.sock.shutdown(2)
    connection.close()
    client = openai_client(running)
    # With every reply slot in use a request would be refused; the cancelled one is not in use.
    replies = [client.completions.create(model="run", prompt="x", max_tokens=2) for _ in range(4)]
    assert all(r.usage.completion_tokens >= 1 for r in replies)


def test_eight_clients_of_twenty_requests_each_are_all_answered_or_cleanly_refused(running):
    start = connect(running).snapshot().step
    outcomes: list[int] = []
    lock = threading.Lock()

    def client_loop() -> None:
        for _ in range(20):
            status, headers, _ = raw(running, "POST", "/v1/completions", completion(max_tokens=2))
            with lock:
                outcomes.append(status)
            if status == 429:
                assert headers.get("Retry-After") == "1"

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert len(outcomes) == 160 and set(outcomes) <= {200, 429} and outcomes.count(200) >= 20
    wait_until(lambda: connect(running).snapshot().step > start, 60, "training to go on")


def test_a_killed_run_is_told_as_not_running(tmp_path):
    folder = tmp_path / "run"
    process = start_run(folder, tmp_path / "cache")
    wait_until(lambda: live(folder), what="the run to serve")
    attached = RemoteEngine(folder)
    wait_until(lambda: attached.snapshot().step >= 3, what="the attached client to follow")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    # The attached client says so in one line and keeps what it last saw.
    wait_until(lambda: attached.snapshot().state is RunState.FAILED, 30, "the client to notice")
    lost = attached.snapshot()
    assert "does not answer" in lost.error and "\n" not in lost.error and lost.train_history
    assert not attached.is_alive()
    attached.close()
    assert read_server_files(folder) is not None  # left behind by the kill
    with pytest.raises(RunNotRunning, match="its process .* is gone"):
        connect(folder)


def test_a_kept_run_trains_on_in_a_session_of_its_own(tmp_path):
    from gemma_tui.cli import keep_training_in_background

    folder = tmp_path / "run"
    process = start_run(folder, tmp_path / "cache")
    wait_until(lambda: live(folder), what="the run to serve")
    assert gemma("control", str(folder), "stop").returncode == 0  # what the studio does first
    process.wait(60)
    os.environ["GEMMA_STUDIO_CACHE"] = str(tmp_path / "cache")
    try:
        assert keep_training_in_background(str(folder)) == 0
        info, _ = read_server_files(folder)
        assert os.getsid(info["pid"]) != os.getsid(0)  # a hang-up of this terminal does not reach it
        wait_until(lambda: live(folder), what="the kept run to serve")
        assert gemma("control", str(folder), "stop").returncode == 0
    finally:
        del os.environ["GEMMA_STUDIO_CACHE"]
