"""The training engine: a run in a background thread, driven by commands, told through events.

    from gemma_core import TrainSettings, TrainingEngine
    engine = TrainingEngine(TrainSettings.for_preset("nano", max_steps=200))
    final = engine.run()                 # blocking; or start() and poll snapshot()

Clients (the headless CLI, the studio, a notebook) start it, send it commands
(pause, unpause, save now, evaluate now, stop) and read what it does through
events and cumulative snapshots (``run.events``, ``run.state_store``). Each command
returns a ``Future`` that completes with its outcome; ignore it to fire and
forget. The engine keeps the thread and the command loop; ``setup`` builds
the run's parts, ``step`` trains, ``evaluation`` scores, ``checkpoints``
saves. It never imports a UI.

On a CPU, chat replies share the cores with training by taking turns: the
trainer decodes a few tokens of a waiting reply itself between optimizer
steps (``chat``), so two torch computations never run at once.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from gemma_core.chat import (ChatJob, ChatService, ComputeTurns, InferenceCopy, LiveWeights, PiecesOf,
                             check_chat_request)
from gemma_core.errors import Cancelled, DiskFull, UserError, internal_message
from gemma_core.folder_lock import FolderLock
from gemma_core.model.config import GemmaConfig
from gemma_core.model.generation import SamplingParams, stream_text
from gemma_core.model.model import Gemma3Model
from gemma_core.run import layer_probe, layout, logs
from gemma_core.run.events import (CheckpointSaved, EvalResult, Event, LayerProbe, LayerStats, LogMessage,
                                   RunFailed, RunFinished, RunSnapshot, RunState, SampleProduced, StateChanged,
                                   StepMetrics, StepSkipped)
from gemma_core.run.history import read_run_history
from gemma_core.run.samples_log import read_samples
from gemma_core.run.state_store import RunStateStore
from gemma_core.tokenizers.tokenizer import Tokenizer
from gemma_core.train import checkpoints, distributed
from gemma_core.train.evaluation import score_windows
from gemma_core.train.flops import model_flops_utilisation
from gemma_core.train.optim import describe_optimizer
from gemma_core.train.settings import TrainSettings
from gemma_core.train.setup import ResumePoint, RunParts, claim_run_folder, prepare_run
from gemma_core.train.step import StepResult, TrainStep

# The commands a run over several ranks acts on, in order of precedence (the
# studio's pause and chat drive single-process runs only).
RANK_COMMANDS = ("abort", "stop", "save", "eval")


class Companion(Protocol):
    """Something that lives exactly as long as a run holds its folder, such as the run's HTTP
    API (``serve.training``): the engine knows nothing of what it does."""

    def start(self) -> None:
        """On the training thread, rank 0, once the folder is checked and locked and before the
        data is prepared; raising makes it the run's failure."""

    def close(self) -> None:
        """As the run ends (after its logs close, before its lock goes); also after a failed start."""


class CommandRefused(UserError):
    """A command the run could not carry out (it is not running, or there is nothing to do)."""


class TrainingFailed(UserError):
    """``run()``'s run failed; ``snapshot`` is its final state, ``str()`` the reason."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        super().__init__(snapshot.error or "training failed")
        self.snapshot = snapshot


class TrainingEngine:
    def __init__(self, settings: TrainSettings | None = None, *, pause_on_disk_full: bool = False) -> None:
        """``pause_on_disk_full``: when the disk fills, pause and wait for space (a studio a
        person watches) instead of stopping with a checkpoint (a command in a script)."""
        settings = TrainSettings() if settings is None else settings
        if not isinstance(settings, TrainSettings):
            raise TypeError(f"TrainingEngine takes TrainSettings, got {type(settings).__name__} "
                            "(for a preset: TrainingEngine(TrainSettings.for_preset('nano')))")
        self.pause_on_disk_full = pause_on_disk_full
        settings.validate()
        self.settings = settings
        self.output_dir = Path(settings.output_dir)
        self.ranks = distributed.ranks_from_environment(settings.fsdp)
        self.run_id = _run_id_of(self.output_dir) if settings.resume else _new_run_id()
        self.store = RunStateStore(self.run_id, str(self.output_dir), settings.max_steps, settings.preset)
        self.ready = threading.Event()  # set once the model exists (or the run has failed)
        self._last_log_entries: dict[str, dict] = {}  # the newest entry of each log stream
        self.exit_reason: str | None = None  # "completed", "stopped" or "failed", once it ends
        # Set when the run's parts exist (a client shows the layer map from model_config).
        self.parts: RunParts | None = None
        self.model_config: GemmaConfig | None = None
        self.tokenizer: Tokenizer | None = None
        self.model: Gemma3Model | None = None
        self._thread: threading.Thread | None = None
        self._commands: deque[tuple[str, Future]] = deque()
        self._commands_ready = threading.Condition()
        self._stop_requested = threading.Event()  # reaches data preparation, which takes no commands
        self._turns = ComputeTurns()
        self._weights: LiveWeights | None = None
        self._chat: ChatService | None = None
        self._logs = logs.RunLogs(None)
        self._step_runner: TrainStep | None = None
        self._checkpointer: checkpoints.Checkpointer | None = None
        self._lock = FolderLock(self.output_dir, "run")
        self._companions: list[Companion] = []  # live as long as the run holds its folder
        self._started: list[Companion] = []
        self.trains = True  # for the server: this run takes commands
        self.owns_run = True  # the run lives in this process: a studio quitting asks what to do
        self._step = 0
        self._tokens_seen = 0
        self._best_val = math.inf
        self._skipped_steps = 0
        self._skipped_in_a_row = 0
        self._elapsed_before = 0.0  # training time of earlier sessions of a resumed run
        self._eta = EtaEstimate()
        self._last_checkpoint: CheckpointSaved | None = None
        self._last_eval: EvalResult | None = None
        self._probe_ids: list[int] | None = None  # the probe prompt in the run's tokens, once made
        self._probe_skip_said = False
        self._accepting_commands = True  # until the run ends; later ones are answered at once

    @classmethod
    def resume(cls, output_dir: str | Path, **overrides: Any) -> "TrainingEngine":
        """An engine that continues the run in ``output_dir`` (call ``start`` or ``run``)."""
        return cls(TrainSettings.for_resume(output_dir, **overrides))

    def add_companion(self, companion: Companion) -> None:
        """Have ``companion`` live exactly as long as this run holds its folder (rank 0 only)."""
        if self._thread is not None:
            raise CommandRefused("add companions before start()")
        self._companions.append(companion)

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        """Train in a background thread; returns at once."""
        if self._thread is not None:
            raise CommandRefused("this engine has already started; make a new one to train again")
        self._thread = threading.Thread(target=self._main, name="gemma-trainer", daemon=True)
        self._thread.start()

    def run(self) -> RunSnapshot:
        """Train to the end in this thread's time: returns the final snapshot, raises
        ``TrainingFailed`` if the run fails. Ctrl-C stops it with a checkpoint."""
        if self._thread is None:
            self.start()
        try:
            while not self.join(timeout=0.2):
                pass
        except KeyboardInterrupt:
            self.stop(save=True)
            self.join()
        final = self.snapshot()
        if final.state is RunState.FAILED:
            raise TrainingFailed(final)
        return final

    def join(self, timeout: float | None = None) -> bool:
        """Wait for training and chat replies to end; True when they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        for thread in self._chat.threads() if self._chat is not None else ():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive()

    def is_alive(self) -> bool:
        chats = self._chat.threads() if self._chat is not None else []
        return (self._thread is not None and self._thread.is_alive()) or bool(chats)

    def close(self) -> None:
        """Nothing to let go of: the run is stopped with ``stop``."""
        return None

    # --------------------------------------------------------------- reading
    def snapshot(self) -> RunSnapshot:
        return self.store.snapshot()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` on the training thread with every later event (return quickly).
        Returns a function that unsubscribes it."""
        return self.store.subscribe(callback)

    def unsubscribe(self, callback: Callable[[Event], None]) -> None:
        self.store.unsubscribe(callback)

    # --------------------------------------------------------------- commands
    def pause(self) -> Future:
        """Pause after the current step; completes with the ``StateChanged`` to PAUSED."""
        return self._command("pause")

    def unpause(self) -> Future:
        """Carry on training; completes with the ``StateChanged`` to RUNNING."""
        return self._command("unpause")

    def save_now(self) -> Future:
        """Write a checkpoint after the current step; completes with the ``CheckpointSaved``."""
        return self._command("save")

    def eval_now(self) -> Future:
        """Evaluate after the current step; completes with the ``EvalResult``."""
        return self._command("eval")

    def stop(self, save: bool = True) -> Future:
        """End the run (with a checkpoint unless ``save`` is False); completes with the
        ``RunFinished``. A run still preparing its data stops there, saving nothing."""
        self._stop_requested.set()
        return self._command("stop" if save else "abort")

    def _command(self, name: str) -> Future:
        future: Future = Future()
        with self._commands_ready:
            if not self._accepting_commands:
                self._settle(name, future)
            else:
                self._commands.append((name, future))
                self._commands_ready.notify_all()
        return future

    def _settle(self, name: str, future: Future) -> None:
        """The outcome of a command that arrives once the run has ended."""
        if future.done():
            return
        snap = self.snapshot()
        if name in ("stop", "abort") and snap.state in (RunState.FINISHED, RunState.STOPPED):
            future.set_result(RunFinished(snap.step, self.exit_reason or "completed",
                                          snap.last_checkpoint.path if snap.last_checkpoint else None,
                                          self.run_id))
        else:
            future.set_exception(CommandRefused(f"the run is not running ({snap.state.value})"))

    def _next_command(self, block: bool) -> tuple[str, Future] | None:
        """The next command to carry out; one whose future was cancelled while it waited is dropped."""
        with self._commands_ready:
            if not self._commands and block:
                self._commands_ready.wait(0.1)
            while self._commands:
                name, future = self._commands.popleft()
                if future.running() or future.set_running_or_notify_cancel():
                    return name, future
            return None

    # ------------------------------------------------------------------ chat
    def chat(self, prompt: str, params: SamplingParams, special_tokens: bool = False,
             alternatives: int = 0) -> ChatJob:
        """Continue ``prompt`` from the current weights in the background, without stopping
        training for longer than a few tokens at a time; ``alternatives``: see ``ChatService.chat``."""
        check_chat_request(prompt, params, alternatives)
        if self._chat is None:
            return ChatJob.failed(prompt, params, self._step,
                                  "the model is still being prepared; try again in a moment")
        return self._chat.chat(prompt, params, special_tokens, alternatives)

    def compute(self, pieces_of: PiecesOf, per_turn: int = 1) -> ChatJob:
        """Other work on the current weights (an API's scoring), taking turns as chat does."""
        if self._chat is None:
            return ChatJob.failed("", SamplingParams(), self._step,
                                  "the model is still being prepared; try again in a moment")
        return self._chat.compute(pieces_of, per_turn)

    # ------------------------------------------------------------- the run
    def _publish(self, event: Event) -> Event:
        return self.store.publish(event)

    def _set_state(self, state: RunState) -> StateChanged:
        return self._publish(StateChanged(state, self._step))

    def _log(self, text: str, level: str = "info") -> None:
        self._publish(LogMessage(level, text))

    def _main(self) -> None:
        try:
            if self.ranks.is_main:  # one writer per run folder, from before anything is read
                # Said before the lock file is made: a folder that is not the run's keeps no trace.
                layout.check_output_dir(self.output_dir, resume=self.settings.resume,
                                        overwrite=self.settings.overwrite)
                self._lock.acquire()
                for companion in self._companions:
                    self._started.append(companion)  # closed in finally even when start fails
                    companion.start()
            parts = prepare_run(self.settings, self.ranks, self._log, cancel=self._stop_requested)
            self._adopt(parts)
            self.ready.set()
            self._loop()
        except Cancelled:
            self._finish("stopped", saved=None)
        except DiskFull as err:
            self._fail(self._saved_what_it_could(err))
        except UserError as err:
            self._fail(str(err))
        except torch.OutOfMemoryError:
            s = self.settings
            self._fail(f"out of memory at batch {s.train_batch_size} x length {s.max_length}: lower "
                       "--train_batch_size or --max_length (raise --gradient_accumulation_steps to "
                       "keep the tokens per step)")
        except BaseException as err:  # a bug, a panic in a Rust extension: never a silent end
            self.store.keep_message(LogMessage("error", traceback.format_exc(), self.run_id))
            self._fail(internal_message(err), internal=True)
        finally:
            self._turns.own_cores(False)
            distributed.finish(self.ranks)
            self.ready.set()
            self._logs.close()
            for companion in reversed(self._started):
                companion.close()
            self._lock.release(remove_if_unused=not self._logs_claimed())
            with self._commands_ready:  # commands that arrived too late get their outcome
                self._accepting_commands = False
                while self._commands:
                    self._settle(*self._commands.popleft())

    def _adopt(self, parts: RunParts) -> None:
        """Take the prepared parts: claim the run folder, restore a resumed run's history."""
        self.parts = parts
        self.model_config, self.tokenizer, self.model = parts.model_config, parts.tokenizer, parts.model
        resumed = parts.resumed or ResumePoint(0, 0, math.inf, 0)
        self._step, self._tokens_seen, self._best_val = resumed.step, resumed.tokens_seen, resumed.best_val_loss
        self._skipped_steps = resumed.skipped_steps
        if parts.resumed is not None:
            self._last_checkpoint = CheckpointSaved(resumed.step, str(self.output_dir / layout.CHECKPOINT),
                                                    resumed.saved_at, self.run_id)
        if self.ranks.is_main:
            self._logs = claim_run_folder(self.settings, parts, self.run_id)
        self._weights = LiveWeights(parts.model, self._step)
        self._chat = ChatService(InferenceCopy(self._weights), parts.tokenizer, parts.dtype, self._turns)
        self._step_runner = TrainStep(self.settings, parts.model, parts.train_module, parts.optimizer,
                                      parts.batches, parts.device, parts.dtype, self.ranks, self._weights,
                                      self._log)
        self._checkpointer = checkpoints.Checkpointer(
            self.output_dir, self.ranks, parts.model, parts.optimizer, parts.param_names, parts.batches,
            fixed_state={"model": parts.model_config.to_dict(), "tokenizer": parts.tokenizer.spec(),
                         "settings": self.settings.to_dict(), "run_id": self.run_id,
                         "data_fingerprint": parts.data_fingerprint})
        self.store.set_run_facts(device=parts.device_name, dtype=parts.dtype_name,
                                 n_parameters=parts.n_parameters)
        if parts.resumed is not None:
            history = read_run_history(self.output_dir, self.settings.max_steps)
            self._elapsed_before = history.elapsed_s  # a resumed run's clock goes on
            self.store.load_history(history)
            samples, note = read_samples(self.output_dir)  # so the studio's Samples go back to step 1
            self.store.load_samples(samples)
            if note:
                self._log(note, "warning")
            self.store.set_position(step=resumed.step, tokens_seen=resumed.tokens_seen,
                                    skipped_steps=resumed.skipped_steps, last_checkpoint=self._last_checkpoint)
            self._log(f"resumed from step {self._step}")
        where = parts.device_name
        if self.ranks.active:
            where = (f"{self.ranks.world_size} ranks ({'FSDP2' if self.ranks.fsdp else 'DDP'}), "
                     f"{parts.device_name} each")
        self._log(f"model: {parts.n_parameters:,} parameters on {where} ({parts.dtype_name}, "
                  f"attention {parts.kernel})")
        self._log(describe_optimizer(self.settings, parts.optimizer))

    def _loop(self) -> None:
        """Train until the last step, carrying out each command between two steps."""
        loop = _LoopClock(self._elapsed_before)
        self._set_state(RunState.RUNNING)
        self._turns.own_cores(True)
        while self._step < self.settings.max_steps:
            command, future = self._agreed_command(block=loop.paused)
            if command is not None:
                if self._COMMANDS[command](self, loop, future):
                    return  # the command ended the run
                continue
            if not loop.paused:
                self._train_one_step(loop)
        self._finish("completed", self._save_checkpoint())

    # Each returns True when it has ended the run.
    def _on_pause(self, loop: _LoopClock, future: Future) -> bool:
        if not loop.paused:
            loop.pause()
            self._turns.own_cores(False)
        future.set_result(self._set_state(RunState.PAUSED))
        return False

    def _on_unpause(self, loop: _LoopClock, future: Future) -> bool:
        if loop.paused:
            loop.unpause()
            self._turns.own_cores(True)
        future.set_result(self._set_state(RunState.RUNNING))
        return False

    def _on_save(self, loop: _LoopClock, future: Future | None) -> bool:
        self._resolve(future, self._save_checkpoint)
        self._set_state(RunState.PAUSED if loop.paused else RunState.RUNNING)
        return False

    def _on_eval(self, loop: _LoopClock, future: Future | None) -> bool:
        self._resolve(future, self._evaluate)
        self._set_state(RunState.PAUSED if loop.paused else RunState.RUNNING)
        return False

    def _on_stop(self, loop: _LoopClock, future: Future | None, save: bool = True) -> bool:
        # A checkpoint needs a step: a run stopped before its first one saves nothing.
        saved = self._save_checkpoint() if save and self._step > 0 else None
        finished = self._finish("stopped", saved)
        if future is not None:
            future.set_result(finished)
        return True

    def _on_abort(self, loop: _LoopClock, future: Future | None) -> bool:
        return self._on_stop(loop, future, save=False)

    _COMMANDS = {"pause": _on_pause, "unpause": _on_unpause, "save": _on_save, "eval": _on_eval,
                 "stop": _on_stop, "abort": _on_abort}

    def _train_one_step(self, loop: _LoopClock) -> None:
        s = self.settings
        t0 = time.perf_counter()
        result = self._step_runner(self._step)
        dt = time.perf_counter() - t0
        tokens = (s.train_batch_size * s.max_length * s.gradient_accumulation_steps
                  * self.ranks.world_size)  # every rank's, for global tokens/s
        if result.loss is None:
            self._skip_step()
            return
        self._skipped_in_a_row = 0
        self._step += 1
        self._tokens_seen += tokens
        loop.rate = tokens / dt if loop.rate is None else 0.8 * loop.rate + 0.2 * tokens / dt
        elapsed = loop.elapsed()
        try:
            self._record_step(result, loop.rate, elapsed)
            if self._step % s.eval_iters == 0 or self._step == s.max_steps:
                self._evaluate()
                self._set_state(RunState.RUNNING)
            if s.sample_every and s.sample_prompt and self._step % s.sample_every == 0:
                self._sample()
            if self._step % s.save_steps == 0 and self._step != s.max_steps:
                self._save_checkpoint()
                self._set_state(RunState.RUNNING)
        except DiskFull as err:
            if not self.pause_on_disk_full:
                raise
            # The studio: wait for the user to free space. The log keeps what it could
            # not write and writes it first when training goes on.
            self._log(f"{err}; training paused: free some space, then resume", "error")
            loop.pause()
            self._turns.own_cores(False)
            self._set_state(RunState.PAUSED)
            return
        self._turns.between_steps()

    def _agreed_command(self, block: bool) -> tuple[str | None, Future | None]:
        """This rank's next command; with several ranks, the one every rank acts on now."""
        taken = self._next_command(block)
        command, future = taken if taken is not None else (None, None)
        if not self.ranks.active:
            return command, future
        agreed = distributed.agree(self.ranks, [command == c for c in RANK_COMMANDS], self.parts.device)
        chosen = next((c for c, yes in zip(RANK_COMMANDS, agreed) if yes), None)
        if command is not None and command != chosen:
            if command in RANK_COMMANDS:  # another rank's command came first: this one waits its turn
                with self._commands_ready:
                    self._commands.appendleft((command, future))
            else:
                future.set_exception(CommandRefused(f"{command} is not available when training on "
                                                    "several ranks"))
            future = None
        return chosen, future

    def _resolve(self, future: Future | None, work: Callable[[], Any]) -> None:
        """Run ``work`` for a command: its result, or a refusal, is the command's outcome.
        A full disk fails the command, not the run."""
        try:
            outcome = work()
        except (CommandRefused, DiskFull) as err:
            if isinstance(err, DiskFull):
                self._log(str(err), "error")
            if future is not None:
                future.set_exception(err)
            return
        if future is not None:
            future.set_result(outcome)

    def _record_step(self, result: StepResult, rate: float, elapsed: float) -> None:
        s = self.settings
        eta = self._eta.update(self._step, elapsed, s.max_steps)
        mfu = model_flops_utilisation(rate, self.parts.flops_per_token, self.parts.peak_flops,
                                      self.ranks.world_size)
        adamw_lr = result.learning_rates["adamw"]  # the seed's learning_rate: every run has AdamW
        self._publish(StepMetrics(self._step, s.max_steps, self._tokens_seen, result.loss, adamw_lr,
                                  result.grad_norm, rate, elapsed, eta, mfu, result.learning_rates))
        self._publish(LayerStats(self._step, "grad norm", result.layer_grad_norms))
        if self._step % s.logging_steps == 0 or self._step == s.max_steps:
            entry = {"step": self._step, "train_loss": result.loss, "learning_rate": adamw_lr,
                     "gradient_accumulation_steps": s.gradient_accumulation_steps,
                     "learning_rates": result.learning_rates,
                     "grad_norm": result.grad_norm, "tokens_seen": self._tokens_seen,
                     "tokens_per_s": rate, "elapsed_s": elapsed}
            if mfu is not None:  # a GPU whose peak is known
                entry["mfu"] = mfu
            self._append_log(layout.TRAIN_STREAM, entry)

    def _append_log(self, stream: str, entry: dict) -> None:
        """Append to a log, keeping the entry for the next checkpoint (which stores its step's)."""
        self._last_log_entries[stream] = entry
        (self._logs.train if stream == layout.TRAIN_STREAM else self._logs.val).append(entry)

    def _skip_step(self) -> None:
        self._skipped_steps += 1
        self._skipped_in_a_row += 1
        self._publish(StepSkipped(self._step + 1, self._skipped_in_a_row))
        self._log(f"step {self._step + 1}: loss or gradient is not finite; step skipped "
                  f"({self._skipped_in_a_row} in a row)", "warning")
        if self._skipped_in_a_row >= self.settings.max_bad_steps:
            kept = ("the last good checkpoint is kept" if self._last_checkpoint is not None
                    or self.settings.resume else "no checkpoint was saved")
            raise UserError(
                f"stopped at step {self._step + 1}: {self._skipped_in_a_row} steps in a row had a "
                f"non-finite loss or gradient; {kept}. Lower --learning_rate or check the data")

    # --------------------------------------------------- evaluation, samples
    def _evaluate(self) -> EvalResult:
        """Score the validation windows at this step (once: a step already evaluated answers
        with its result, however many ask at once)."""
        if self._last_eval is not None and self._last_eval.step == self._step:
            return self._last_eval
        parts = self.parts
        self._set_state(RunState.EVALUATING)
        with distributed.whole_model(self.ranks, parts.train_module):
            score = score_windows(parts.model, parts.data.val.windows, parts.val_batches,
                                  parts.byte_lengths, parts.device, parts.dtype)
        layers = self._probe_layers()
        result = EvalResult(self._step, self._tokens_seen, score.loss, score.perplexity, score.bits_per_byte,
                            layers=layers)
        entry = {"step": self._step, "val_loss": score.loss, "perplexity": result.perplexity,
                 "bits_per_byte": result.bits_per_byte, "tokens_seen": self._tokens_seen}
        if layers:
            entry[layer_probe.LOG_KEY] = layer_probe.layers_to_log(layers)
        self._append_log(layout.VAL_STREAM, entry)
        if score.loss < self._best_val:
            self._best_val = score.loss
            self._checkpointer.save_best_weights()
        self._last_eval = self._publish(result)
        return self._last_eval

    def _probe_layers(self) -> tuple[LayerProbe, ...]:
        """Each layer on the fixed probe prompt (``layer_probe``), measured by the main rank alone.
        Under FSDP each rank holds a shard of every layer: nothing is measured, and that is said once."""
        if not self.ranks.is_main:
            return ()
        if self.ranks.active and self.ranks.fsdp:
            if not self._probe_skip_said:
                self._probe_skip_said = True
                self._log("per-layer attention entropy and residual RMS are not measured under --fsdp "
                          "(each rank holds a shard of every layer); a run without --fsdp logs them")
            return ()
        parts = self.parts
        if self._probe_ids is None:
            self._probe_ids = layer_probe.probe_token_ids(parts.tokenizer, parts.model_config.context_length)
        return layer_probe.probe_layers(parts.model, self._probe_ids)

    def _sample(self) -> None:
        parts = self.parts
        params = SamplingParams(max_new_tokens=self.settings.sample_tokens, temperature=0.8, top_k=50,
                                seed=self.settings.seed)
        for prompt in self.settings.sample_prompt:
            with distributed.whole_model(self.ranks, parts.train_module):
                text = "".join(stream_text(parts.model, parts.tokenizer, prompt, params, dtype=parts.dtype))
            self._logs.samples.append({"step": self._step, "prompt": prompt, "text": text})
            self._publish(SampleProduced(self._step, prompt, text))

    # ----------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> CheckpointSaved:
        """Write a resumable checkpoint of this step (once: a step already saved is not saved again)."""
        if self._step == 0:
            raise CommandRefused("no step has been trained yet: there is nothing to save")
        if self._last_checkpoint is not None and self._last_checkpoint.step == self._step:
            return self._last_checkpoint
        self._set_state(RunState.SAVING)
        self._logs.sync()
        path = self._checkpointer.save(
            step=self._step, tokens_seen=self._tokens_seen, skipped_steps=self._skipped_steps,
            best_val_loss=self._best_val if math.isfinite(self._best_val) else None,
            last_log_entries={stream: entry for stream, entry in self._last_log_entries.items()
                              if entry["step"] == self._step})
        self._last_checkpoint = self._publish(CheckpointSaved(self._step, str(path), time.time()))
        return self._last_checkpoint

    def _saved_what_it_could(self, err: DiskFull) -> str:
        """After a full disk stopped the run: try for a checkpoint of this step; say what is kept."""
        if self.parts is not None and self._step > 0:
            try:
                saved = self._save_checkpoint()
                return f"{err} (a checkpoint of step {saved.step} was saved: --resume goes on from it)"
            except DiskFull:
                pass
        if self._last_checkpoint is not None:
            return (f"{err} (the last complete checkpoint is of step {self._last_checkpoint.step}: "
                    "--resume goes on from it)")
        return f"{err} (no checkpoint was saved: once there is room, start the run again with --overwrite)"

    # ---------------------------------------------------------------- ending
    def _finish(self, reason: str, saved: CheckpointSaved | None) -> RunFinished:
        if self.ranks.is_main and self.parts is not None and self._logs_claimed():
            logs.write_seed_outputs(self.output_dir)
        self.exit_reason = reason
        self._turns.own_cores(False)
        # A run stopped before its last step says so: "finished" would hide the steps left.
        stopped_early = reason == "stopped" and self._step < self.settings.max_steps
        self._set_state(RunState.STOPPED if stopped_early else RunState.FINISHED)
        return self._publish(RunFinished(self._step, reason, saved.path if saved is not None else None))

    def _logs_claimed(self) -> bool:
        return isinstance(self._logs.train, logs.JsonlLog)

    def _fail(self, message: str, internal: bool = False) -> None:
        self.exit_reason = "failed"
        self._turns.own_cores(False)
        self._publish(RunFailed(self._step, message, internal))
        self._set_state(RunState.FAILED)


class _LoopClock:
    """The training loop's pace: paused or not, training time so far (a pause stops the
    clock; earlier sessions of a resumed run count) and the smoothed tokens per second."""

    def __init__(self, elapsed_before: float) -> None:
        self.paused = False
        self.rate: float | None = None
        self._elapsed_before = elapsed_before
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._started

    def pause(self) -> None:
        self.paused = True
        self._elapsed_before += time.perf_counter() - self._started

    def unpause(self) -> None:
        self.paused = False
        self._started = time.perf_counter()


class EtaEstimate:
    """Time left, from the wall clock of the steps since warm-up, evaluations and checkpoints
    included; none until it means something.

    The first steps of a run compile and warm caches, and the loss's own tokens/s leaves out
    evaluation: an estimate from either read 1h00m two seconds into a two-minute run. This
    one starts counting after ``WARMUP_STEPS`` and speaks once ``MIN_STEPS`` steps and
    ``MIN_SECONDS`` have been timed.
    """

    WARMUP_STEPS = 3
    MIN_STEPS = 10
    MIN_SECONDS = 5.0

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None  # (step, elapsed) when the count began
        self._steps_seen = 0

    def update(self, step: int, elapsed: float, max_steps: int) -> float | None:
        self._steps_seen += 1
        if self._steps_seen == self.WARMUP_STEPS:  # of this session: a resumed run warms up again
            self._first = (step, elapsed)
        if self._first is None:
            return None
        steps, seconds = step - self._first[0], elapsed - self._first[1]
        if steps < self.MIN_STEPS or seconds < self.MIN_SECONDS:
            return None
        return (max_steps - step) * seconds / steps


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _run_id_of(output_dir: Path) -> str:
    """The id a run was given when it began (a resumed run keeps it)."""
    try:
        run_id = checkpoints.read_checkpoint_state(output_dir).get("run_id")
    except UserError:
        run_id = None  # the run's preparation will say what is wrong
    return run_id if isinstance(run_id, str) and run_id else _new_run_id()
