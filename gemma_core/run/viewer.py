"""A finished run, opened for inspection: its curves from the logs, chat on its weights.

It offers the engine's reading side (``snapshot``, ``chat``, ``join``) so a
client can show a finished run exactly as it shows a live one. The training
controls exist and do nothing: there is no training to control.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gemma_core.device import resolve_device
from gemma_core.model.generation import SamplingParams, stream_text
from gemma_core.run import files as run_files
from gemma_core.run.history import BoundedSeries
from gemma_core.run.model_dir import load_model_dir
from gemma_core.train.engine import ChatJob
from gemma_core.train.events import CheckpointSaved, LogMessage, RunSnapshot, RunState, StepMetrics


class RunViewer:
    def __init__(self, output_dir: str | Path, device: str = "auto") -> None:
        self.output_dir = Path(output_dir)
        self.model, self.tokenizer, self.config_data = load_model_dir(self.output_dir, resolve_device(device))
        self.model_config = self.model.cfg
        self.ready = threading.Event()
        self.ready.set()
        self._threads: list[threading.Thread] = []
        self._snapshot = self._read_snapshot()

    def _read_snapshot(self) -> RunSnapshot:
        train = run_files.read_jsonl(self.output_dir / run_files.TRAIN_STREAM)
        val = run_files.read_jsonl(self.output_dir / run_files.VAL_STREAM)
        train_history, lr_history = BoundedSeries(), BoundedSeries()
        for entry in train:
            train_history.append((entry["step"], entry.get("tokens_seen", 0), entry["train_loss"]))
            lr_history.append((entry["step"], entry["learning_rate"]))
        evals = [run_files.eval_result_from_entry(e) for e in val]
        last = train[-1] if train else None
        training = self.config_data.get("training", {})
        max_steps = training.get("max_steps", last["step"] if last else 0)
        latest = None
        if last is not None:
            latest = StepMetrics(last["step"], max_steps, last.get("tokens_seen", 0), last["train_loss"],
                                 last["learning_rate"], last.get("grad_norm", float("nan")),
                                 last.get("tokens_per_s", 0.0), last.get("elapsed_s", 0.0), None)
        checkpoint = None
        state_path = self.output_dir / run_files.CHECKPOINT / "state.json"
        if state_path.is_file():
            checkpoint = CheckpointSaved(last["step"] if last else 0, str(state_path.parent),
                                         state_path.stat().st_mtime)
        return RunSnapshot(
            version=1, state=RunState.VIEWING, step=last["step"] if last else 0, max_steps=max_steps,
            tokens_seen=last.get("tokens_seen", 0) if last else 0, latest=latest,
            train_history=train_history.snapshot(), lr_history=lr_history.snapshot(),
            eval_history=tuple(evals), best_eval=min(evals, key=lambda e: e.val_loss, default=None),
            last_checkpoint=checkpoint, layer_stats=None,
            messages=(LogMessage("info", f"opened {self.output_dir} (best-validation weights)"),),
            error=None, output_dir=str(self.output_dir),
            device=str(self.model.embed_tokens.weight.device), dtype="fp32",
            preset=training.get("preset"), n_parameters=self.model.num_parameters())

    # ------------------------------------------------------------ reading
    def snapshot(self) -> RunSnapshot:
        return self._snapshot

    def chat(self, prompt: str, params: SamplingParams) -> ChatJob:
        job = ChatJob(prompt, params, self._snapshot.step)

        def generate() -> None:
            try:
                for piece in stream_text(self.model, self.tokenizer, prompt, params, cancel=job.cancelled):
                    job._put(piece)
                job._finish()
            except Exception as err:  # shown in the chat pane
                job._finish(f"{type(err).__name__}: {err}")

        thread = threading.Thread(target=generate, name="gemma-chat", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    # ------------------------------------------- controls: nothing to control
    # A finished run has no training thread: these keep the engine's interface
    # so a client needs no special case, and deliberately change nothing.
    def start(self) -> None:
        return None

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None

    def save_now(self) -> None:
        return None

    def eval_now(self) -> None:
        return None

    def stop(self, save: bool = True) -> None:
        for thread in self._threads:
            thread.join(timeout=0)

    def subscribe(self, callback) -> None:
        return None  # a finished run emits no events

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive()

    def is_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)
