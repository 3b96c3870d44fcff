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

import http.client
import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from gemma_core.chat import ChatJob, check_chat_request
from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.sampling import SamplingParams
from gemma_core.serve.server import read_server_files
from gemma_core.serve.wire import event_from_wire, snapshot_from_wire, telemetry_from_wire
from gemma_core.telemetry import HostReading, TelemetrySample
from gemma_core.train.events import ENDED_STATES, RunSnapshot, RunState

CONNECT_TIMEOUT_S = 5.0


class RunNotRunning(UserError):
    """The folder's run has no live server: finished, stopped, or its process died."""


class CommandFailed(UserError):
    """The run refused a command, or did not complete it."""


class RunClient:
    def __init__(self, url: str, token: str, folder: Path | None = None) -> None:
        parts = urlsplit(url)
        self.url, self.token, self.folder = url, token, folder
        self._host, self._port = parts.hostname, parts.port

    # ---------------------------------------------------------- transport
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body).encode("utf-8")
            connection.request(method, path, body=payload, headers=self._headers())
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise RunNotRunning(f"{self._where()}: the run's server does not answer ({err}); the run is not "
                                "running") from None
        finally:
            connection.close()
        return _decoded(response.status, data, self._where())

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def _where(self) -> str:
        return str(self.folder) if self.folder is not None else self.url

    # ------------------------------------------------------------- calls
    def run_info(self) -> dict:
        return self._request("GET", "/api/run", timeout=CONNECT_TIMEOUT_S)

    def snapshot(self, after: int = -1, wait: float = 0.0) -> RunSnapshot:
        data = self._request("GET", f"/api/snapshot?after={after}&wait={wait}", timeout=wait + 30)
        return snapshot_from_wire(data)

    def telemetry(self):
        return telemetry_from_wire(self._request("GET", "/api/telemetry", timeout=10))

    def command(self, name: str, timeout: float = 660.0):
        """Send a command and wait for its outcome: the event it produced."""
        data = self._request("POST", f"/api/commands/{name}", {}, timeout=timeout)
        return event_from_wire(data["outcome"])

    def chat(self, prompt: str, params: SamplingParams) -> Iterator[dict]:
        """The server's chat events: {"step"}, then {"text"} pieces, then {"done", "error", ...}."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=600)
        body = {"prompt": prompt, "params": {"max_new_tokens": params.max_new_tokens,
                                             "temperature": params.temperature, "top_k": params.top_k,
                                             "top_p": params.top_p, "seed": params.seed}}
        try:
            connection.request("POST", "/api/chat", body=json.dumps(body).encode("utf-8"), headers=self._headers())
            response = connection.getresponse()
            if response.status != 200:
                _decoded(response.status, response.read(), self._where())
            for line in response:
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])
        except (OSError, http.client.HTTPException) as err:
            raise RunNotRunning(f"{self._where()}: the run's server went away ({err})") from None
        finally:
            connection.close()


def _decoded(status: int, data: bytes, where: str) -> Any:
    try:
        decoded = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{where}: the run's server sent something that is not JSON (HTTP {status})") from None
    if status == 200:
        return decoded
    message = decoded.get("error", {}).get("message") if isinstance(decoded, dict) else None
    if status == 401:
        raise UserError(f"{where}: the run's server refused its key (server.token); is this the run's folder?")
    raise CommandFailed(f"{where}: {message or f'HTTP {status}'}")


def connect(folder: str | Path) -> RunClient:
    """A client of the live run in ``folder``; ``RunNotRunning`` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run folder not found")
    found = read_server_files(folder)
    if found is None:
        raise RunNotRunning(f"{folder}: the run is not running (no server.json: it finished, stopped, or "
                            "was started with --no-serve)")
    info, token = found
    client = RunClient(info["url"], token, folder)
    try:
        client.run_info()
    except RunNotRunning:
        raise RunNotRunning(f"{folder}: the run is not running: its process (pid {info.get('pid')}) is gone "
                            "without cleaning up (killed, or the machine restarted)") from None
    return client


# ---------------------------------------------------------------- the studio
class RemoteChatJob(ChatJob):
    """A reply streamed from the run's server, read by a background thread."""

    def __init__(self, client: RunClient, prompt: str, params: SamplingParams) -> None:
        super().__init__(prompt, params, step=-1)
        threading.Thread(target=self._read, args=(client,), name="gemma-remote-chat", daemon=True).start()
        self.wait_for_step(timeout=10)  # the step the weights belong to comes first

    def _read(self, client: RunClient) -> None:
        error = None
        try:
            for event in client.chat(self.prompt, self.params):
                if "step" in event and self.step < 0:
                    self.set_step(event["step"])
                if self.cancelled.is_set():
                    break  # closing the connection cancels the reply on the server
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
    """The studio's engine interface for a run in another process, on this machine."""

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
            if read_server_files(self.client.folder) is None:
                return True
            time.sleep(0.1)
        return False

    def _final_snapshot(self) -> RunSnapshot:
        """The last snapshot seen, marked as ended, with the newest checkpoint on disk."""
        from dataclasses import replace

        from gemma_core.run.checkpoint_state import read_checkpoint_state
        from gemma_core.run.layout import has_checkpoint, newest_checkpoint
        from gemma_core.train.events import CheckpointSaved, LogMessage

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

            from gemma_core.train.events import LogMessage
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

    def chat(self, prompt: str, params: SamplingParams) -> ChatJob:
        check_chat_request(prompt, params)
        return RemoteChatJob(self.client, prompt, params)


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
