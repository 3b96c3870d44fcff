"""Clients of a run's server, on the same machine: found through the run folder.

* ``RunClient`` asks a run for its snapshot, sends it commands and streams chat replies
  (standard library HTTP; one request per call, so it is safe from any thread).
* ``RemoteEngine`` is the studio's engine interface over that client: ``gemma-tui attach``
  runs the same app on it as on a run in its own process. It follows the run with long
  polls in a background thread, so ``snapshot()`` never waits on the network.
* ``RemoteTelemetry`` reads the training machine's GPU (or CPU) pane from the server.

A run whose process is gone (its ``server.json`` left behind by a kill) answers nothing:
``connect`` then says the run is not running.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gemma_core.chat import ChatJob, check_chat_request
from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.sampling import SamplingParams
from gemma_core.model.token_choices import ChoiceBuilder, choices_from_logprobs
from gemma_core.serve import server_files
from gemma_core.serve.wire import event_from_wire, snapshot_from_wire, telemetry_from_wire
from gemma_core.telemetry import HostReading, TelemetrySample
from gemma_core.run.events import CheckpointSaved, ENDED_STATES, LogMessage, RunSnapshot, RunState

# How long a run's server has to answer, start to end (a socket timeout alone would let a
# server trickling a byte at a time hold the caller forever). Generous: a run training on
# every core answers slowly, and slow is not dead.
CONNECT_TIMEOUT_S = 10.0
SNAPSHOT_SLACK_S = 30.0  # beyond a long poll's own wait
COMMAND_TIMEOUT_S = 660.0  # a save or an evaluation of a large model takes minutes
CHAT_IDLE_S = 600.0
# How many bytes an answer may have. A snapshot's histories are bounded (2,048 points each,
# 512 evaluations), so a snapshot of any run is under a megabyte: 16 MB leaves room for much
# larger models' layer statistics. Everything else (run info, an event, a telemetry reading,
# one chat event) is a few kilobytes.
SNAPSHOT_MAX_BYTES = 16 << 20
ANSWER_MAX_BYTES = 1 << 20
# An inspection carries every attention map: layers x heads x T x T weights as text (34 MB
# for the demo preset at 512 tokens, about 170 MB for Gemma 3 270M).
INSPECT_MAX_BYTES = 256 << 20


class RunNotRunning(UserError):
    """The folder's run has no live server: finished, stopped, or its process died."""

class ProcessGone(RunNotRunning):
    """The run's server files are there but its process is not: killed, or the machine restarted."""

class RunNotAnswering(UserError):
    """The run's process is alive, but its server did not answer in time (busy, or stuck)."""

    def __init__(self, message: str, waited_s: float) -> None:
        super().__init__(message)
        self.waited_s = waited_s


class KeyNotReadable(UserError):
    """The run is live, but its key (server.token) is another user's, or unreadable here."""

class NotTheRunsServer(UserError):
    """What answers on the recorded port is not the run's server."""

class CommandFailed(UserError):
    """The run refused a command, or did not complete it."""

class RunClient:
    def __init__(self, url: str, token: str, folder: Path | None = None, pid: int | None = None) -> None:
        parts = urlsplit(url)
        self.url, self.token, self.folder, self.pid = url, token, folder, pid
        self._host, self._port = parts.hostname, parts.port

    # ---------------------------------------------------------- transport
    def _request(self, method: str, path: str, body: Any = None, *, timeout: float,
                 limit: int = ANSWER_MAX_BYTES) -> Any:
        status, data = self._exchange(method, path, body, timeout, limit)
        return _decoded(status, data, self)

    def _exchange(self, method: str, path: str, body: Any, timeout: float, limit: int) -> tuple[int, bytes]:
        """(HTTP status, body) within ``timeout`` seconds all told and ``limit`` bytes."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        expired = threading.Event()
        opened: list[socket.socket] = []  # the response keeps reading it after the connection lets go

        def cut() -> None:  # the deadline: whatever the socket is waiting on ends now
            expired.set()
            for sock in opened:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(timeout, cut)
        timer.daemon = True
        timer.start()
        try:
            connection.connect()
            opened.append(connection.sock)
            if expired.is_set():
                raise TimeoutError
            payload = None if body is None else json.dumps(body).encode("utf-8")
            connection.request(method, path, body=payload, headers=self._headers())
            response = connection.getresponse()
            data = _bounded_body(response, limit, self)
            if expired.is_set() or response.length:  # cut short: by the deadline, or the peer
                raise TimeoutError if expired.is_set() else http.client.IncompleteRead(data)
            return response.status, data
        except (OSError, http.client.HTTPException) as err:
            if expired.is_set() or isinstance(err, TimeoutError):
                raise RunNotAnswering(f"{self.where}: the run's server has not answered for {timeout:g} s",
                                      timeout) from None
            if isinstance(err, (OSError, http.client.IncompleteRead)):
                raise RunNotRunning(f"{self.where}: the run's server does not answer ({err}); the run is not "
                                    "running") from None
            raise NotTheRunsServer(f"{self.where}: {self.something_else} (it does not speak HTTP: "
                                   f"{type(err).__name__})") from None
        finally:
            timer.cancel()
            connection.close()

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    @property
    def where(self) -> str:
        return str(self.folder) if self.folder is not None else self.url

    @property
    def something_else(self) -> str:
        recorded = (self.folder / server_files.ADDRESS_FILE) if self.folder is not None else self.url
        return f"something else answers on the port recorded in {recorded}"

    def _not_the_run(self, what: str) -> NotTheRunsServer:
        return NotTheRunsServer(f"{self.where}: {self.something_else} ({what}); if the run is not running, "
                                f"remove {server_files.ADDRESS_FILE}")

    # ------------------------------------------------------------- calls
    def run_info(self) -> dict:
        try:
            info = self._request("GET", "/api/run", timeout=CONNECT_TIMEOUT_S)
        except CommandFailed as err:  # the run's server answers this with its snapshot's facts, or 401
            raise self._not_the_run(str(err).rsplit(": ", 1)[-1]) from None
        if (not isinstance(info, dict) or not isinstance(info.get("run_id"), str)
                or type(info.get("pid")) is not int):
            raise self._not_the_run(f"it answered {_kind(info)} where the run says what it is")
        if self.pid is not None and info["pid"] != self.pid:
            raise self._not_the_run(f"process {info['pid']} answers, the run's is {self.pid}")
        return info

    def snapshot(self, after: int = -1, wait: float = 0.0) -> RunSnapshot:
        data = self._request("GET", f"/api/snapshot?after={after}&wait={wait}",
                             timeout=wait + SNAPSHOT_SLACK_S, limit=SNAPSHOT_MAX_BYTES)
        if not isinstance(data, dict) or "state" not in data:
            raise self._not_the_run(f"it answered {_kind(data)} where the run's snapshot belongs")
        try:
            return snapshot_from_wire(data)
        except UserError:
            raise self._not_the_run("its snapshot cannot be read") from None

    def telemetry(self):
        data = self._request("GET", "/api/telemetry", timeout=CONNECT_TIMEOUT_S)
        try:
            return telemetry_from_wire(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._not_the_run(f"it answered {_kind(data)} where a telemetry reading belongs") from None

    def command(self, name: str, timeout: float = COMMAND_TIMEOUT_S):
        """Send a command and wait for its outcome: the event it produced."""
        data = self._request("POST", f"/api/commands/{name}", {}, timeout=timeout)
        if not isinstance(data, dict) or not isinstance(data.get("outcome"), dict):
            raise self._not_the_run(f"it answered {_kind(data)} where the command's outcome belongs")
        return event_from_wire(data["outcome"])

    def inspect(self, prompt: str, top_k: int = 5) -> dict:
        """POST /api/inspect: the inspection's JSON shape (README, "Look inside")."""
        data = self._request("POST", "/api/inspect", {"prompt": prompt, "top_k": top_k},
                             timeout=COMMAND_TIMEOUT_S, limit=INSPECT_MAX_BYTES)
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise self._not_the_run(f"it answered {_kind(data)} where an inspection belongs")
        return data

    def chat(self, prompt: str, params: SamplingParams, alternatives: int = 0) -> Iterator[dict]:
        """The server's chat events: {"step"}, then {"text"} pieces, then {"done", "error", ...};
        ``alternatives`` > 0: text and done events carry the tokens' ``logprobs`` (chat
        completions' shape) with that many ``top_logprobs`` each."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=CHAT_IDLE_S)
        body = {"prompt": prompt, "params": {"max_new_tokens": params.max_new_tokens,
                                             "temperature": params.temperature, "top_k": params.top_k,
                                             "top_p": params.top_p, "seed": params.seed}}
        if alternatives:
            body["top_logprobs"] = alternatives
        try:
            connection.request("POST", "/api/chat", body=json.dumps(body).encode("utf-8"),
                               headers=self._headers())
            response = connection.getresponse()
            if response.status != 200:
                _decoded(response.status, _bounded_body(response, ANSWER_MAX_BYTES, self), self)
            while line := response.readline(ANSWER_MAX_BYTES + 1):
                if len(line) > ANSWER_MAX_BYTES:
                    raise self._not_the_run(f"a chat event longer than {ANSWER_MAX_BYTES:,} bytes")
                if line.startswith(b"data: "):
                    yield _chat_event(line[6:], self)
        except (OSError, http.client.HTTPException) as err:
            raise RunNotRunning(f"{self.where}: the run's server went away ({err})") from None
        finally:
            connection.close()


def _bounded_body(response: http.client.HTTPResponse, limit: int, client: RunClient) -> bytes:
    if response.length is not None and response.length > limit:
        raise client._not_the_run(f"it announced {response.length:,} bytes, more than the {limit:,} a run "
                                  "sends")
    chunks, size = [], 0
    while chunk := response.read1(64 << 10):
        size += len(chunk)
        if size > limit:
            raise client._not_the_run(f"it sent more than the {limit:,} bytes a run sends")
        chunks.append(chunk)
    return b"".join(chunks)


def _chat_event(data: bytes, client: RunClient) -> dict:
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        raise client._not_the_run("a chat event that is not JSON") from None
    if not isinstance(event, dict):
        raise client._not_the_run(f"a chat event that is {_kind(event)}")
    return event


def _decoded(status: int, data: bytes, client: RunClient) -> Any:
    try:
        decoded = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise client._not_the_run(f"its answer is not JSON, HTTP {status}") from None
    if status == 200:
        return decoded
    error = decoded.get("error") if isinstance(decoded, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if status == 401:
        raise UserError(f"{client.where}: the run's server refused its key (server.token); is this the run's "
                        "folder?")
    raise CommandFailed(f"{client.where}: {message if isinstance(message, str) else f'HTTP {status}'}")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object without the expected fields" if value else "an empty object"
    return {list: "a list", str: "a string", type(None): "nothing"}.get(type(value), type(value).__name__)


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def connect(folder: str | Path, announce: Callable[[str], None] | None = say_on_stderr) -> RunClient:
    """A client of the live run in ``folder``. ``RunNotRunning`` when there is none (``ProcessGone``
    when its process died), ``RunNotAnswering`` when its process lives but its server is silent,
    ``KeyNotReadable`` when the run is live but its key is another user's.

    Nothing is sent before the folder's files pass every check (``server_files``). A run that
    serves on a non-loopback host (recorded with --serve_host) is talked to only after
    ``announce`` says so; with ``announce=None`` it is refused instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run folder not found")
    found = server_files.read_server_files(folder)
    if found is None:
        raise RunNotRunning(f"{folder}: the run is not running (no server.json: it finished, stopped, or "
                            "was started with --no-serve)")
    if found.token is None:
        if server_files.run_alive(folder, found.pid):
            raise KeyNotReadable(f"{folder}: the run is live (process {found.pid}), but its key "
                                 f"({server_files.TOKEN_FILE}) is not readable by this user "
                                 f"({found.token_problem}); run this as the user who started the run")
        raise _gone(folder, found.pid)
    if found.remote:
        if announce is None:
            raise UserError(f"{folder / server_files.ADDRESS_FILE}: the run serves on {found.host} (recorded "
                            f"with --serve_host); talk to it with gemma-tui attach {folder}")
        announce(f"talking to the run at {found.host}, an address of this machine it serves on (--serve_host)")
    client = RunClient(found.url, found.token, folder, pid=found.pid)
    try:
        client.run_info()
    except (RunNotRunning, RunNotAnswering) as err:
        if not server_files.run_alive(folder, found.pid):
            raise _gone(folder, found.pid) from None
        waited = err.waited_s if isinstance(err, RunNotAnswering) else 0.0
        raise RunNotAnswering(
            f"{folder}: the run is live (process {found.pid}), but its server has not answered for "
            f"{waited:g} s (busy, or stuck); try again in a while" if waited else
            f"{folder}: the run's process ({found.pid}) is alive, but nothing answers at {found.url} (the "
            f"run may be closing; if process {found.pid} is not the run, remove {server_files.ADDRESS_FILE})",
            waited) from None
    return client


def _gone(folder: Path, pid: int) -> ProcessGone:
    if server_files.process_alive(pid):  # the id lives on in another program: the run's lock is free
        return ProcessGone(f"{folder}: the run is not running: it ended without cleaning up (killed, or the "
                           f"machine restarted), and its process id {pid} now belongs to another program")
    return ProcessGone(f"{folder}: the run is not running: its process (pid {pid}) is gone without cleaning "
                       "up (killed, or the machine restarted)")


# ---------------------------------------------------------------- the studio
class RemoteChatJob(ChatJob):
    """A reply streamed from the run's server, read by a background thread."""

    def __init__(self, client: RunClient, prompt: str, params: SamplingParams, alternatives: int = 0) -> None:
        super().__init__(prompt, params, step=-1)
        self.alternatives = alternatives
        threading.Thread(target=self._read, args=(client,), name="gemma-remote-chat", daemon=True).start()
        self.wait_for_step(timeout=10)  # the step the weights belong to comes first

    def _read(self, client: RunClient) -> None:
        error = None
        tokens: ChoiceBuilder | None = ChoiceBuilder() if self.alternatives else None
        try:
            for event in client.chat(self.prompt, self.params, self.alternatives):
                if "step" in event and self.step < 0:
                    self.set_step(event["step"])
                if self.cancelled.is_set():
                    break  # closing the connection cancels the reply on the server
                if tokens is not None and "logprobs" in event:
                    choices = choices_from_logprobs(event["logprobs"], tokens)
                    if choices is None:  # not the shape asked for: the text still comes, unshaded
                        tokens = None
                    for choice in choices or ():
                        self.put_token(choice)
                if "text" in event:
                    self.put(event["text"])
                if event.get("done"):
                    error = event.get("error")
                    self.stats.finish_reason = event.get("finish_reason")
                    for name, kind in (("prompt_tokens", int), ("prompt_cut", int), ("context_full", bool)):
                        if isinstance(event.get(name), kind):
                            setattr(self.stats, name, event[name])
                    break
        except UserError as err:
            error = str(err)
        finally:
            self.finish(error)


class RemoteEngine:
    """A ``RunHandle`` (``run.handle``) on a run in another process, on this machine, through its server."""

    owns_run = False  # quitting the studio leaves the run training
    POLL_WAIT_S = 10.0
    MIN_INTERVAL_S = 0.5  # at most two snapshots a second travel (the studio redraws at 2 Hz)
    # One every 2 s while the run trains on a CPU (the studio draws at that pace there):
    # serving them takes from the cores training uses.
    CPU_MIN_INTERVAL_S = 2.0

    def __init__(self, folder: str | Path, cpu_interval_s: float = CPU_MIN_INTERVAL_S) -> None:
        self.cpu_interval_s = cpu_interval_s
        self.client = connect(folder)
        info = self.client.run_info()
        self.trains = bool(info.get("trains"))
        self.model_config: GemmaConfig | None = (GemmaConfig.from_dict(info["model"], source=str(folder))
                                                 if info.get("model") else None)
        self._snapshot = self.client.snapshot()
        self._lost: str | None = None  # why the server stopped answering
        self._closed = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="gemma-attach", daemon=True)
        self._follower.start()

    def _follow(self) -> None:
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                snap = self.client.snapshot(after=self._snapshot.version, wait=self.POLL_WAIT_S)
            except UserError as err:
                if self._ended_cleanly():
                    self._snapshot = self._final_snapshot()
                else:
                    self._lost = str(err)
                return
            if snap.version > self._snapshot.version or snap.state != self._snapshot.state:
                self._snapshot = snap
            if self.model_config is None:
                self._learn_model()
            if snap.state in ENDED_STATES:
                return
            interval = (self.cpu_interval_s if snap.device.startswith("cpu") and snap.state is RunState.RUNNING
                        else self.MIN_INTERVAL_S)
            self._closed.wait(max(0.0, interval - (time.monotonic() - started)))

    def _ended_cleanly(self, patience_s: float = 5.0) -> bool:
        """Whether the run's process ended on its own terms: a run that stops or finishes
        removes its server files as it exits, between two of this follower's polls; one
        killed leaves them behind."""
        if self.client.folder is None:
            return False
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            try:
                if server_files.read_server_files(self.client.folder) is None:
                    return True
            except UserError:
                return False  # damaged, or another's: not a clean ending
            time.sleep(0.1)
        return False

    def _final_snapshot(self) -> RunSnapshot:
        """The last snapshot seen, marked as ended, with the newest checkpoint on disk."""
        from dataclasses import replace

        from gemma_core.run.checkpoint_state import read_checkpoint_state
        from gemma_core.run.layout import has_checkpoint, newest_checkpoint

        last = self._snapshot
        changes: dict = {}
        folder = Path(self.client.folder)
        try:
            if has_checkpoint(folder):
                state = read_checkpoint_state(folder)
                if state["step"] >= last.step:
                    changes = {"step": state["step"], "last_checkpoint": CheckpointSaved(
                        state["step"], str(newest_checkpoint(folder)), state.get("saved_at", 0.0))}
        except (UserError, OSError, KeyError, TypeError):
            pass  # the studio keeps what it last saw
        step = changes.get("step", last.step)
        messages = last.messages + (LogMessage("info", f"the run ended at step {step:,}"),)
        ended = RunState.FINISHED if last.max_steps and step >= last.max_steps else RunState.STOPPED
        return replace(last, state=ended, messages=messages[-20:], version=last.version + 1, **changes)

    def _learn_model(self) -> None:
        try:
            model = self.client.run_info().get("model")
        except UserError:
            return
        if model:
            self.model_config = GemmaConfig.from_dict(model, source=str(self.client.folder))

    # --------------------------------------------------------------- reading
    def snapshot(self) -> RunSnapshot:
        if self._lost is not None and self._snapshot.state not in ENDED_STATES:
            from dataclasses import replace

            messages = self._snapshot.messages + (LogMessage("error", self._lost),)
            return replace(self._snapshot, state=RunState.FAILED, error=self._lost, messages=messages[-20:],
                           version=self._snapshot.version + 1)
        return self._snapshot

    def is_alive(self) -> bool:
        """True while the run trains (and the server answers)."""
        return self._lost is None and self._snapshot.state not in ENDED_STATES

    def join(self, timeout: float | None = None) -> bool:
        return True  # nothing of the run lives in this process

    def close(self) -> None:
        """Detach: stop following. The run goes on."""
        self._closed.set()

    # -------------------------------------------------------------- commands
    def _command(self, name: str) -> Future:
        future: Future = Future()

        def send() -> None:
            try:
                future.set_result(self.client.command(name))
            except BaseException as err:  # the outcome is the failure
                future.set_exception(err)

        threading.Thread(target=send, name=f"gemma-command-{name}", daemon=True).start()
        return future

    def pause(self) -> Future:
        return self._command("pause")

    def unpause(self) -> Future:
        return self._command("unpause")

    def save_now(self) -> Future:
        return self._command("save")

    def eval_now(self) -> Future:
        return self._command("eval")

    def stop(self, save: bool = True) -> Future:
        return self._command("stop" if save else "abort")

    def chat(self, prompt: str, params: SamplingParams, alternatives: int = 0) -> ChatJob:
        check_chat_request(prompt, params, alternatives)
        return RemoteChatJob(self.client, prompt, params, alternatives)

    def inspect(self, prompt: str, top_k: int = 5):
        """One inspected pass on the run's current weights, done by its server (waits for it)."""
        return inspection_from_json(self.client.inspect(prompt, top_k))


def inspection_from_json(data: dict):
    """The server's JSON inspection as the ``Inspection`` a local pass returns (without token
    ids and logits, which it does not carry)."""
    import torch

    from gemma_core.inspect import Inspection, LayerInspection, Prediction

    def predictions(items) -> list:
        return [Prediction(-1, str(p["token"]), float(p["prob"])) for p in items]

    try:
        layers = [LayerInspection(
            index=int(layer["index"]), type=str(layer["type"]), window=layer["window"],
            attention=torch.tensor(layer["attention"], dtype=torch.float32),
            entropy=torch.tensor(layer["entropy"], dtype=torch.float32),
            residual_rms=float(layer["residual_rms"]), lens=[predictions(p) for p in layer["lens"]])
            for layer in data["layers"]]
        return Inspection(step=int(data["step"]), token_ids=[], tokens=[str(t) for t in data["tokens"]],
                          layers=layers, logits=torch.empty(0), next=predictions(data["next"]),
                          surprisal=[None if s is None else float(s) for s in data["surprisal"]])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"the run's server sent an inspection that cannot be read ({type(err).__name__})") from None


class RemoteTelemetry:
    """The training machine's readings, fetched from its server once a second in the
    background, so the studio's pane never waits on the network."""

    INTERVAL_S = 1.0

    def __init__(self, client: RunClient) -> None:
        self.client = client
        self._last: TelemetrySample = TelemetrySample(
            time.monotonic(), None, None, HostReading(None, 0, None, None),
            "waiting for the training machine's reading")
        self._closed = threading.Event()
        threading.Thread(target=self._fetch, name="gemma-remote-telemetry", daemon=True).start()

    def _fetch(self) -> None:
        while not self._closed.is_set():
            try:
                self._last = self.client.telemetry()
            except UserError:
                pass  # the pane keeps the last reading; the run's state says why
            self._closed.wait(self.INTERVAL_S)

    def sample(self) -> TelemetrySample:
        return self._last

    def close(self) -> None:
        self._closed.set()
