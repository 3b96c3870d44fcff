"""A finished run, opened for inspection: its curves from the logs, chat on its weights.

It offers the engine's reading side (``snapshot``, ``chat``, ``join``) so a
client can show a finished run exactly as it shows a live one: the snapshot
comes from the same state store, filled from the run's logs, and chats are
answered by the same chat service. The training controls exist and refuse:
there is no training to control.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import torch

from gemma_core.chat import ChatJob, ChatService, ComputeTurns, FixedWeights, PiecesOf, check_chat_request
from gemma_core.device import resolve_device, resolve_dtype
from gemma_core.errors import UserError
from gemma_core.model.generation import SamplingParams
from gemma_core.run.history import read_run_history
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.run.layout import has_checkpoint, newest_checkpoint
from gemma_core.run.model_dir import load_model_dir
from gemma_core.run.samples_log import read_samples
from gemma_core.run.events import CheckpointSaved, LogMessage, RunSnapshot, RunState
from gemma_core.run.state_store import RunStateStore


class NothingToControl(UserError):
    """A training command sent to a finished run."""


class RunViewer:
    def __init__(self, output_dir: str | Path, device: str = "auto", dtype: str = "auto") -> None:
        self.output_dir = Path(output_dir)
        torch_device = resolve_device(device)
        self.model, self.tokenizer, self.config_data = load_model_dir(self.output_dir, torch_device)
        self.model_config = self.model.cfg
        self.trains = False  # a finished run: nothing to command
        self.owns_run = True  # nothing trains, so a studio quits at once
        self.ready = threading.Event()
        self.ready.set()
        training = self.config_data.get("training", {})
        training = training if isinstance(training, dict) else {}
        # Chat in the precision the run trained in, as the engine's chat did, unless told.
        dtype = resolve_dtype(str(training.get("dtype", "auto")) if dtype == "auto" else dtype, torch_device)
        saved_state = read_checkpoint_state(self.output_dir) if has_checkpoint(self.output_dir) else None
        # The checkpoint's own settings say how far the run meant to go (a resume may change it).
        settings = saved_state.get("settings") if saved_state else None
        planned = settings.get("max_steps") if isinstance(settings, dict) else training.get("max_steps")
        history = read_run_history(self.output_dir, planned if isinstance(planned, int) else 0)
        last = history.last_step
        step = saved_state["step"] if saved_state else (last.step if last is not None else 0)
        planned = planned if isinstance(planned, int) else step
        run_id = self.config_data.get("run_id")
        stopped_early = saved_state is not None and step < planned
        self.store = RunStateStore(run_id if isinstance(run_id, str) else self.output_dir.name,
                                   str(self.output_dir), planned, training.get("preset"),
                                   state=RunState.STOPPED if stopped_early else RunState.VIEWING)
        self.store.load_history(history, position_from_logs=True)
        samples, samples_note = read_samples(self.output_dir)
        self.store.load_samples(samples)
        for note in history.notes + ((samples_note,) if samples_note else ()):
            self.store.keep_message(LogMessage("warning", note))
        checkpoint = newest_checkpoint(self.output_dir)
        if checkpoint is not None:
            saved = CheckpointSaved(step, str(checkpoint), (checkpoint / "state.json").stat().st_mtime)
            self.store.set_position(step=step, tokens_seen=saved_state.get("tokens_seen", 0) if saved_state
                                    else (last.tokens_seen if last is not None else 0),
                                    skipped_steps=saved_state.get("skipped_steps", 0) if saved_state else 0,
                                    last_checkpoint=saved)
        self.store.set_run_facts(device=str(torch_device), n_parameters=self.model.num_parameters(),
                                 dtype="bf16" if dtype == torch.bfloat16 else "fp32")
        self.store.keep_message(LogMessage("info", f"opened {self.output_dir} (best-validation weights)"))
        if stopped_early:  # said where it is seen first: the run is not done, and how to go on
            self.store.keep_message(LogMessage(
                "warning", f"stopped at step {step:,} of {planned:,}; resume with: "
                           f"gemma-core train --resume --output_dir {self.output_dir}"))
        # Nobody owns the cores unless a server's main thread serves chats (``turns.serve``);
        # until then a reply's own thread decodes.
        self.turns = ComputeTurns()
        self._chat = ChatService(FixedWeights(self.model, step), self.tokenizer, dtype, self.turns)

    # ------------------------------------------------------------ reading
    def snapshot(self) -> RunSnapshot:
        return self.store.snapshot()

    def chat(self, prompt: str, params: SamplingParams, special_tokens: bool = False,
             alternatives: int = 0) -> ChatJob:
        check_chat_request(prompt, params, alternatives)
        return self._chat.chat(prompt, params, special_tokens, alternatives)

    def compute(self, pieces_of: PiecesOf, per_turn: int = 1) -> ChatJob:
        return self._chat.compute(pieces_of, per_turn)

    def subscribe(self, callback):
        return self.store.subscribe(callback)  # a finished run publishes nothing more

    def unsubscribe(self, callback) -> None:
        self.store.unsubscribe(callback)

    # ------------------------------------------- controls: nothing to control
    # A finished run has no training thread: these keep the engine's interface
    # so a client needs no special case; each outcome says why nothing happened.
    def _refused(self) -> Future:
        future: Future = Future()
        future.set_exception(NothingToControl(f"{self.output_dir}: a finished run; nothing trains"))
        return future

    def start(self) -> None:
        return None

    def pause(self) -> Future:
        return self._refused()

    def unpause(self) -> Future:
        return self._refused()

    def save_now(self) -> Future:
        return self._refused()

    def eval_now(self) -> Future:
        return self._refused()

    def stop(self, save: bool = True) -> Future:
        for job_thread in self._chat.threads():
            job_thread.join(timeout=0)
        return self._refused()

    def close(self) -> None:
        return None

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._chat.threads():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive()

    def is_alive(self) -> bool:
        return bool(self._chat.threads())

