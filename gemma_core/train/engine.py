"""The training engine: a training loop that runs in a background thread.

Clients (the headless CLI, the studio) start it, send it commands (pause,
resume, stop, save now, evaluate now, chat) and read what it does through
events and cumulative snapshots (``gemma_core.train.events``). It never imports a UI.

On a CPU, the chat shares the cores with training by taking turns: the
trainer lets a pending generation decode a few tokens between optimizer steps,
so two torch computations never run at once and oversubscribe the cores.
"""

from __future__ import annotations

import copy
import math
import queue
import random
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gemma_core.data import DataOptions, TrainBatches, fixed_validation_batches, prepare_datasets
from gemma_core.device import autocast, resolve_device, resolve_dtype
from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.generation import SamplingParams, stream_text
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.run import files as run_files
from gemma_core.run.history import BoundedSeries
from gemma_core.run.model_dir import model_state_for_saving, save_weights, write_config
from gemma_core.tokenizers.tokenizer import Tokenizer, load_tokenizer, token_byte_lengths, tokenizer_from_spec
from gemma_core.train import distributed
from gemma_core.train.compiled_loss import CompiledLoss
from gemma_core.train.evaluation import score_windows
from gemma_core.train.events import (
    CheckpointSaved,
    EvalResult,
    Event,
    LayerStats,
    LogMessage,
    RunFailed,
    RunFinished,
    RunSnapshot,
    RunState,
    SampleProduced,
    StateChanged,
    StepMetrics,
)
from gemma_core.train.flops import device_peak_flops, training_flops_per_token
from gemma_core.train.memory import available_bytes, training_bytes
from gemma_core.train.optim import build_optimizer, lr_at
from gemma_core.train.settings import TrainSettings

TOKENS_PER_TURN = 4  # chat tokens decoded between two optimizer steps on a CPU


class ChatJob:
    """A continuation being generated; iterate it for text pieces, or poll ``take()``."""

    def __init__(self, prompt: str, params: SamplingParams, step: int) -> None:
        self.prompt = prompt
        self.params = params
        self.step = step  # the optimizer step whose weights answer
        self.error: str | None = None
        self._pieces: queue.Queue[str | None] = queue.Queue()
        self._taken: list[str] = []
        self._cancel = threading.Event()
        self._done = threading.Event()

    # producer side
    def _put(self, piece: str) -> None:
        self._pieces.put(piece)

    def _finish(self, error: str | None = None) -> None:
        self.error = error
        self._done.set()
        self._pieces.put(None)

    # consumer side
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def cancelled(self) -> threading.Event:
        return self._cancel

    def cancel(self) -> None:
        self._cancel.set()

    def take(self) -> str:
        """Text produced since the last call; never blocks."""
        out = []
        while True:
            try:
                piece = self._pieces.get_nowait()
            except queue.Empty:
                break
            if piece is not None:
                out.append(piece)
        return "".join(out)

    def __iter__(self):
        while True:
            piece = self._pieces.get()
            if piece is None:
                return
            yield piece

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class ComputeTurns:
    """Lets a chat generation use the cores between training steps, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting = 0
        self._granted = False
        self.training_active = False

    def run_chunk(self, work: Callable[[], None]) -> None:
        """Called by the generation thread: wait for the trainer's gap between steps, do work.

        While nothing trains (paused, finished) the cores are free and no turn is needed.
        """
        with self._lock:
            if self.training_active:
                self._waiting += 1
                self._lock.notify_all()
                while not self._granted and self.training_active:
                    self._lock.wait(0.05)
                self._waiting -= 1
            granted = self._granted
        try:
            work()
        finally:
            if granted:  # hand the cores back to the trainer
                with self._lock:
                    self._granted = False
                    self._lock.notify_all()

    def between_steps(self) -> None:
        """Called by the trainer after each step: give a waiting generator one turn."""
        with self._lock:
            if not self._waiting:
                return
            self._granted = True
            self._lock.notify_all()
            while self._granted:
                self._lock.wait(0.05)

    def set_training(self, active: bool) -> None:
        with self._lock:
            self.training_active = active
            self._lock.notify_all()


# The commands a run over several ranks acts on, in order of precedence (the
# studio's pause and chat drive single-process runs only).
RANK_COMMANDS = ("abort", "stop", "save", "eval")


class TrainingEngine:
    def __init__(self, settings: TrainSettings) -> None:
        settings.validate()
        self.settings = settings
        self.output_dir = Path(settings.output_dir)
        self.ranks = distributed.ranks_from_environment(settings.fsdp)
        self.ready = threading.Event()
        self.model_config: GemmaConfig | None = None
        self.tokenizer: Tokenizer | None = None
        self.model: Gemma3Model | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._commands: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._turns = ComputeTurns()
        self._chat_threads: list[threading.Thread] = []
        self._weights_lock = threading.Lock()
        # snapshot state
        self._version = 0
        self._state = RunState.STARTING
        self._step = 0
        self._tokens_seen = 0
        self._latest: StepMetrics | None = None
        self._train_history = BoundedSeries()
        self._lr_history = BoundedSeries()
        self._eval_history = BoundedSeries(512)
        self._best_eval: EvalResult | None = None
        self._last_checkpoint: CheckpointSaved | None = None
        self._layer_stats: LayerStats | None = None
        self._messages: list[LogMessage] = []
        self._error: str | None = None
        self._skipped_steps = 0
        self._device_name = ""
        self._dtype_name = ""
        self._n_parameters = 0
        self.exit_reason: str | None = None

    # ------------------------------------------------------------ public API
    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="gemma-trainer", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._commands.put("pause")

    def resume(self) -> None:
        self._commands.put("resume")

    def save_now(self) -> None:
        self._commands.put("save")

    def eval_now(self) -> None:
        self._commands.put("eval")

    def stop(self, save: bool = True) -> None:
        self._commands.put("stop" if save else "abort")

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        for thread in list(self._chat_threads):
            thread.join(timeout)
        return not self.is_alive()

    def is_alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()) or any(
            t.is_alive() for t in self._chat_threads)

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return RunSnapshot(
                version=self._version, state=self._state, step=self._step,
                max_steps=self.settings.max_steps, tokens_seen=self._tokens_seen,
                latest=self._latest, train_history=self._train_history.snapshot(),
                lr_history=self._lr_history.snapshot(),
                eval_history=self._eval_history.snapshot(), best_eval=self._best_eval,
                last_checkpoint=self._last_checkpoint, layer_stats=self._layer_stats,
                messages=tuple(self._messages[-20:]), error=self._error,
                output_dir=str(self.output_dir), device=self._device_name, dtype=self._dtype_name,
                preset=self.settings.preset, n_parameters=self._n_parameters,
                skipped_steps=self._skipped_steps)

    def weights_copy(self) -> tuple[int, Gemma3Model]:
        """A frozen copy of the current weights and the step they belong to."""
        with self._weights_lock:
            if self.model is None:
                raise UserError("the model is not ready yet")
            return self._step, copy.deepcopy(self.model).eval()

    def chat(self, prompt: str, params: SamplingParams) -> ChatJob:
        """Generate from a copy of the current weights without blocking training."""
        if not self.ready.wait(timeout=0) or self.model is None:
            job = ChatJob(prompt, params, self._step)
            job._finish("the model is still being prepared; try again in a moment")
            return job
        step, model = self.weights_copy()
        job = ChatJob(prompt, params, step)
        thread = threading.Thread(target=self._generate, args=(job, model), name="gemma-chat",
                                  daemon=True)
        self._chat_threads = [t for t in self._chat_threads if t.is_alive()] + [thread]
        thread.start()
        return job

    # ------------------------------------------------------------- internals
    def _emit(self, event: Event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # a client's bug must not stop training
                traceback.print_exc()

    def _set_state(self, state: RunState) -> None:
        with self._lock:
            self._state = state
            self._version += 1
        self._emit(StateChanged(state, self._step))

    def _log(self, text: str, level: str = "info") -> None:
        message = LogMessage(level, text)
        with self._lock:
            self._messages.append(message)
            del self._messages[:-50]
            self._version += 1
        self._emit(message)

    def _generate(self, job: ChatJob, model: Gemma3Model) -> None:
        pieces = stream_text(model, self.tokenizer, job.prompt, job.params, cancel=job.cancelled)
        on_cpu = model.embed_tokens.weight.device.type == "cpu"
        try:
            finished = False
            while not finished:
                def chunk() -> None:
                    nonlocal finished
                    for _ in range(TOKENS_PER_TURN):
                        piece = next(pieces, None)
                        if piece is None:
                            finished = True
                            return
                        job._put(piece)
                if on_cpu:
                    self._turns.run_chunk(chunk)
                else:
                    chunk()
            job._finish()
        except Exception as err:  # shown in the chat pane, never a traceback
            job._finish(f"{type(err).__name__}: {err}")

    # ---------------------------------------------------------- the run
    def _main(self) -> None:
        try:
            self._prepare()
            self.ready.set()
            self._loop()
        except UserError as err:
            self._fail(str(err))
        except torch.OutOfMemoryError:
            s = self.settings
            self._fail(f"out of memory at batch {s.train_batch_size} x length {s.max_length}: lower "
                       "--train_batch_size or --max_length (raise --gradient_accumulation_steps to "
                       "keep the tokens per step)")
        except Exception as err:
            detail = traceback.format_exc()
            with self._lock:
                self._messages.append(LogMessage("error", detail))
            self._fail(f"{type(err).__name__}: {err}")
        finally:
            self._turns.set_training(False)
            distributed.finish(self.ranks)
            self.ready.set()
            for log in (getattr(self, "_train_log", None), getattr(self, "_val_log", None),
                        getattr(self, "_sample_log", None)):
                if log is not None:
                    log.close()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error = message
        self.exit_reason = "failed"
        self._set_state(RunState.FAILED)
        self._emit(RunFailed(self._step, message))

    def _prepare(self) -> None:
        s = self.settings
        if self.ranks.is_main:
            run_files.check_output_dir(self.output_dir, resume=s.resume, overwrite=s.overwrite)
        self.device = distributed.start(self.ranks, resolve_device(s.device))
        self.dtype = resolve_dtype(s.dtype, self.device)
        self._device_name = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                             else "cpu")
        self._dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[self.dtype]
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        np.random.seed(s.seed)

        resume_state = None
        if s.resume:
            model_tensors, optimizer_tensors, resume_state = run_files.load_checkpoint(self.output_dir)
            cfg = GemmaConfig.from_dict(resume_state["model"], source="checkpoint/state.json")
            self.tokenizer = tokenizer_from_spec(resume_state["tokenizer"], self.output_dir)
        else:
            cfg = preset(s.preset)
            if s.model_overrides:
                cfg = GemmaConfig.from_dict(cfg.to_dict() | s.model_overrides, source="--config [model]")
            if s.init_from:  # continue pretraining a checkpoint, with its own tokenizer
                from gemma_core.run.model_dir import load_tokenizer_of, read_config
                cfg, data = read_config(s.init_from)
                self.tokenizer = load_tokenizer_of(s.init_from, data, cfg)
            else:
                self.tokenizer = load_tokenizer(s.tiktoken_encoder_name)
        if self.tokenizer.n_vocab > cfg.vocab_size:
            raise UserError(f"tokenizer {s.tiktoken_encoder_name!r} has {self.tokenizer.n_vocab} tokens "
                            f"but the model's vocab_size is {cfg.vocab_size}; choose a matching "
                            "--tiktoken_encoder_name or --preset")
        if s.eos_token != "<|endoftext|>":
            raise UserError(f"--eos_token {s.eos_token!r}: the tokenizers here end documents with "
                            "'<|endoftext|>'")
        if s.max_length > cfg.context_length:
            raise UserError(f"--max_length {s.max_length} is above the model's context_length "
                            f"{cfg.context_length}; lower --max_length")
        self.model_config = cfg

        self._progress_quarters: dict[str, int] = {}
        self._log(f"preparing data (tokenizer {self.tokenizer.name}, max_length {s.max_length})")
        # Rank 0 builds the token cache; the other ranks then find it built.
        self.data = distributed.main_first(self.ranks, self.device, lambda: prepare_datasets(
            s.train_dataset_path, s.val_dataset_path, s.test_dataset_path, self.tokenizer,
            DataOptions(text_field=s.text_field, add_eos_between_documents=s.add_eos_between_documents,
                        split_on_blank_lines=s.split_on_blank_lines, skip_bad_lines=s.skip_bad_lines),
            s.max_length, s.stride, s.val_fraction, s.cache_dir, progress=self._data_progress))
        for note in self.data.notes:
            self._log(note, "warning")
        self._log(f"train: {self.data.train.n_tokens:,} tokens in {len(self.data.train.windows):,} "
                  f"windows; validation: {self.data.val.n_tokens:,} tokens")

        with torch.device(self.device):
            model = Gemma3Model(cfg)
        if s.init_from and not s.resume:
            from gemma_core.run.model_dir import WEIGHTS_FILE, load_weights
            load_weights(Path(s.init_from) / WEIGHTS_FILE, model)
        self.kernel = model.set_attention_kernel(s.attention)
        self.model = model
        self._n_parameters = model.num_parameters()
        self._check_batch_fits()
        # Wrap before building the optimizer: FSDP2 replaces the parameters with sharded ones.
        self.train_module = distributed.wrap(self.ranks, model, self.device)
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.optimizer = build_optimizer(model, s.learning_rate, s.weight_decay, s.betas, self.device,
                                         fused=not self.ranks.fsdp)
        self.batches = TrainBatches(self.data.train.windows, s.train_batch_size, seed=s.seed,
                                    rank=self.ranks.rank, world_size=self.ranks.world_size)
        self.val_batches = fixed_validation_batches(self.data.val.windows, s.val_batch_size, s.eval_batches)
        self.byte_lengths = torch.from_numpy(token_byte_lengths(self.tokenizer))
        self.flops_per_token = training_flops_per_token(cfg, s.max_length)
        self.peak_flops = device_peak_flops(self.device)
        self._compile_pending = s.compile
        self._consecutive_bad = 0
        self._best_val = math.inf

        if resume_state is not None:
            self._restore(model_tensors, optimizer_tensors, resume_state)
        # Everything above only read and checked; from here on the run writes its folder.
        if self.ranks.is_main:
            run_files.claim_output_dir(self.output_dir, resume=s.resume, overwrite=s.overwrite)
            self._train_log = run_files.JsonlLog(self.output_dir / run_files.TRAIN_STREAM)
            self._val_log = run_files.JsonlLog(self.output_dir / run_files.VAL_STREAM)
            self._sample_log = run_files.JsonlLog(self.output_dir / run_files.SAMPLES)
            write_config(self.output_dir, cfg, self.tokenizer, self._config_extra())
            run_files.write_vocab(self.output_dir, self.tokenizer)
        else:  # only rank 0 writes files
            self._train_log = self._val_log = self._sample_log = run_files.NoLog()
        where = self._device_name
        if self.ranks.active:
            where = (f"{self.ranks.world_size} ranks ({'FSDP2' if self.ranks.fsdp else 'DDP'}), "
                     f"{self._device_name} each")
        self._log(f"model: {self._n_parameters:,} parameters on {where} ({self._dtype_name}, "
                  f"attention {self.kernel})")

    def _check_batch_fits(self) -> None:
        s = self.settings
        need = training_bytes(self.model_config, self._n_parameters, s.train_batch_size, s.max_length,
                              self.dtype)
        free = available_bytes(self.device)
        if free is not None and need > free:
            raise UserError(
                f"--train_batch_size {s.train_batch_size} x --max_length {s.max_length} needs at least "
                f"{need / 2**30:.1f} GiB to train but {free / 2**30:.1f} GiB is free on "
                f"{self._device_name}; lower --train_batch_size or --max_length (raise "
                "--gradient_accumulation_steps to keep the tokens per step)")

    def _config_extra(self) -> dict:
        return {"training": self.settings.to_dict()}

    def _data_progress(self, split: str, docs: int, done: int, total: int) -> None:
        """Log tokenization at every further quarter of the text (long corpora take a while)."""
        quarter = 4 * done // total if total else 4
        if quarter > self._progress_quarters.get(split, 0):
            self._progress_quarters[split] = quarter
            self._log(f"tokenizing {split}: {25 * quarter}%")

    # ------------------------------------------------------ resume support
    def _restore(self, model_tensors, optimizer_tensors, state: dict) -> None:
        with torch.no_grad():
            own = self.model.state_dict()
            for name, tensor in model_tensors.items():
                target = own[name]
                distributed.local_tensor(target).copy_(
                    distributed.local_tensor(distributed.shard_like(tensor, target)))
        run_files.restore_optimizer_state(self.optimizer, optimizer_tensors, self.param_names)
        self.batches.load_state_dict(state["data"])
        self._step = state["step"]
        self._tokens_seen = state["tokens_seen"]
        self._best_val = state.get("best_val_loss", math.inf)
        self._skipped_steps = state.get("skipped_steps", 0)
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        random.setstate(_tuples(state["rng"]["python"]))
        if self.ranks.is_main:
            run_files.truncate_logs_to(self.output_dir, self._step)
        # Rebuild the in-memory history from the logs so clients show the whole run.
        self._elapsed_before_resume = 0.0
        for entry in run_files.read_jsonl(self.output_dir / run_files.TRAIN_STREAM):
            self._elapsed_before_resume = entry.get("elapsed_s", self._elapsed_before_resume)
            self._train_history.append((entry["step"], entry.get("tokens_seen", 0), entry["train_loss"]))
            self._lr_history.append((entry["step"], entry["learning_rate"]))
        for entry in run_files.read_jsonl(self.output_dir / run_files.VAL_STREAM):
            result = run_files.eval_result_from_entry(entry)
            self._eval_history.append(result)
            if self._best_eval is None or result.val_loss < self._best_eval.val_loss:
                self._best_eval = result
        self._log(f"resumed from step {self._step}")

    def _gathers_weights(self) -> bool:
        """Rank 0 writes the weights; under FSDP2 gathering them takes every rank."""
        return self.ranks.is_main or self.ranks.fsdp

    def _checkpoint_state(self) -> dict:
        return {
            "step": self._step,
            "tokens_seen": self._tokens_seen,
            "best_val_loss": self._best_val if math.isfinite(self._best_val) else None,
            "skipped_steps": self._skipped_steps,
            "data": self.batches.state_dict(),
            "rng": {"torch": torch.get_rng_state().tolist(), "python": random.getstate()},
            "model": self.model_config.to_dict(),
            "tokenizer": self.tokenizer.spec(),
            "settings": self.settings.to_dict(),
            "saved_at": time.time(),
        }

    def _save_checkpoint(self) -> None:
        self._set_state(RunState.SAVING)
        self._train_log.sync()
        self._val_log.sync()
        state = self._checkpoint_state()
        if state["best_val_loss"] is None:
            state.pop("best_val_loss")
        path = self.output_dir / run_files.CHECKPOINT
        if self._gathers_weights():
            weights = model_state_for_saving(self.model)
            optimizer_state = run_files.optimizer_state_tensors(self.optimizer, self.param_names)
        if self.ranks.is_main:
            path = run_files.save_checkpoint(self.output_dir, weights, optimizer_state, state)
            if not (self.output_dir / "model.safetensors").exists():
                save_weights(self.output_dir / "model.safetensors", weights)  # no evaluation yet
            run_files.write_seed_logs(self.output_dir)
            run_files.write_loss_plot(self.output_dir)
        saved = CheckpointSaved(self._step, str(path), time.time())
        with self._lock:
            self._last_checkpoint = saved
            self._version += 1
        self._emit(saved)

    # ------------------------------------------------------------ the loop
    def _loop(self) -> None:
        s = self.settings
        paused = False
        self._set_state(RunState.RUNNING)
        self._turns.set_training(True)
        started = time.perf_counter()
        elapsed_before = getattr(self, "_elapsed_before_resume", 0.0)  # a resumed run's clock goes on
        rate = None
        while self._step < s.max_steps:
            command = self._next_command(block=paused)
            if self.ranks.active:  # every rank acts on a command at the same step, or none does
                agreed = distributed.agree(self.ranks, [command == c for c in RANK_COMMANDS], self.device)
                command = next((c for c, yes in zip(RANK_COMMANDS, agreed) if yes), None)
            if command == "pause" and not paused:
                paused = True
                self._turns.set_training(False)
                self._set_state(RunState.PAUSED)
                elapsed_before += time.perf_counter() - started
                continue
            if command == "resume" and paused:
                paused = False
                self._turns.set_training(True)
                started = time.perf_counter()
                self._set_state(RunState.RUNNING)
                continue
            if command == "save":
                self._save_checkpoint()
                self._set_state(RunState.PAUSED if paused else RunState.RUNNING)
                continue
            if command == "eval":
                self._evaluate()
                self._set_state(RunState.PAUSED if paused else RunState.RUNNING)
                continue
            if command in ("stop", "abort"):
                if command == "stop":
                    self._save_checkpoint()
                self._finish("stopped")
                return
            if paused:
                continue

            t0 = time.perf_counter()
            loss, grad_norm, lr, layer_norms = self._train_step()
            dt = time.perf_counter() - t0
            tokens = (s.train_batch_size * s.max_length * s.gradient_accumulation_steps
                      * self.ranks.world_size)  # every rank's, for global tokens/s
            if loss is None:
                self._skip_step(grad_norm)
                continue
            self._consecutive_bad = 0
            self._step += 1
            self._tokens_seen += tokens
            rate = tokens / dt if rate is None else 0.8 * rate + 0.2 * tokens / dt
            elapsed = elapsed_before + time.perf_counter() - started
            remaining = s.max_steps - self._step
            eta = remaining * tokens / rate if rate else None
            mfu = (rate * self.flops_per_token / self.peak_flops) if self.peak_flops else None
            metrics = StepMetrics(self._step, s.max_steps, self._tokens_seen, loss, lr, grad_norm,
                                  rate, elapsed, eta, mfu)
            layer_stats = LayerStats(self._step, "grad norm", layer_norms)
            with self._lock:
                self._latest = metrics
                self._layer_stats = layer_stats
                self._train_history.append((self._step, self._tokens_seen, loss))
                self._lr_history.append((self._step, lr))
                self._version += 1
            self._emit(metrics)
            self._emit(layer_stats)
            if self._step % s.logging_steps == 0 or self._step == s.max_steps:
                self._train_log.append({
                    "step": self._step, "train_loss": loss, "learning_rate": lr,
                    "gradient_accumulation_steps": s.gradient_accumulation_steps,
                    "grad_norm": grad_norm, "tokens_seen": self._tokens_seen,
                    "tokens_per_s": rate, "elapsed_s": elapsed})
            if self._step % s.eval_iters == 0 or self._step == s.max_steps:
                self._evaluate()
                self._set_state(RunState.RUNNING)
            if s.sample_every and s.sample_prompt and self._step % s.sample_every == 0:
                self._sample()
            if self._step % s.save_steps == 0 and self._step != s.max_steps:
                self._save_checkpoint()
                self._set_state(RunState.RUNNING)
            self._turns.between_steps()
        self._save_checkpoint()
        self._finish("completed")

    def _next_command(self, block: bool) -> str | None:
        try:
            return self._commands.get(timeout=0.1) if block else self._commands.get_nowait()
        except queue.Empty:
            return None

    def _train_step(self) -> tuple[float | None, float, float, tuple[float, ...]]:
        s = self.settings
        model = self.model
        model.train()
        lr = lr_at(self._step, learning_rate=s.learning_rate, min_lr=s.resolved_min_lr,
                   warmup_steps=s.warmup_steps, max_steps=s.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self._compile_pending:
            self._compile_pending = False
            self._compile_loss()
        total = torch.zeros((), device=self.device)
        micro_steps = s.gradient_accumulation_steps
        for micro in range(micro_steps):
            inputs, targets = next(self.batches)
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            # Ranks average their gradients once per optimizer step, on the last micro-step.
            with distributed.gradient_sync(self.ranks, self.train_module, micro == micro_steps - 1):
                with autocast(self.device, self.dtype):
                    loss = self.train_module(inputs, targets)
                (loss / micro_steps).backward()
            total += loss.detach()
        mean_loss = distributed.mean(self.ranks, total / micro_steps).item()
        squares = torch.stack([
            torch.stack([torch.linalg.vector_norm(distributed.local_tensor(p.grad))
                         for p in layer.parameters() if p.grad is not None]).square().sum()
            for layer in model.layers])
        squares = distributed.squared_norms_summed(self.ranks, squares)  # FSDP2: add the shards
        layer_norms = tuple(squares.sqrt().tolist())  # one device sync for all layers
        if s.grad_clip > 0:
            total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        else:
            total_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in model.parameters() if p.grad is not None])
        grad_norm = float(distributed.full_tensor(total_norm))
        if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None, grad_norm if math.isfinite(grad_norm) else float("nan"), lr, layer_norms
        with self._weights_lock:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, grad_norm, lr, layer_norms

    def _compile_loss(self) -> None:
        """torch.compile the loss, falling back to eager mode where compiling fails.

        The first step pays the compile time (about 40 s for the demo model on two
        CPU cores; less when the compiler's on-disk cache is warm).
        """
        self._log("compiling the model (torch.compile); the first step takes longer")
        loss_module = distributed.loss_module_of(self.train_module)
        loss_module.loss_fn = CompiledLoss(self.model)
        windows = self.data.train.windows  # a batch of the training shape, so it compiles once
        inputs, targets = windows.batch([i % len(windows) for i in range(self.settings.train_batch_size)])
        try:
            with distributed.gradient_sync(self.ranks, self.train_module, False):
                with autocast(self.device, self.dtype):
                    self.train_module(inputs.to(self.device), targets.to(self.device)).backward()
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            loss_module.loss_fn = self.model.loss
            self._log(f"torch.compile failed ({type(err).__name__}); training in eager mode", "warning")
        finally:
            self.model.zero_grad(set_to_none=True)

    def _skip_step(self, grad_norm: float) -> None:
        self._consecutive_bad += 1
        self._skipped_steps += 1
        self._log(f"step {self._step + 1}: loss or gradient is not finite; step skipped "
                  f"({self._consecutive_bad} in a row)", "warning")
        if self._consecutive_bad >= self.settings.max_bad_steps:
            raise UserError(
                f"stopped at step {self._step + 1}: {self._consecutive_bad} steps in a row had a "
                "non-finite loss or gradient; the last good checkpoint is kept. Lower "
                "--learning_rate or check the data")

    def _evaluate(self) -> EvalResult:
        self._set_state(RunState.EVALUATING)
        with distributed.whole_model(self.ranks, self.train_module):
            score = score_windows(self.model, self.data.val.windows, self.val_batches,
                                  self.byte_lengths, self.device, self.dtype)
        val_loss = score.loss
        result = EvalResult(self._step, self._tokens_seen, val_loss, score.perplexity, score.bits_per_byte)
        self._val_log.append({"step": self._step, "val_loss": val_loss, "perplexity": result.perplexity,
                              "bits_per_byte": result.bits_per_byte, "tokens_seen": self._tokens_seen})
        if val_loss < self._best_val:
            self._best_val = val_loss
            if self._gathers_weights():
                weights = model_state_for_saving(self.model)
            if self.ranks.is_main:
                save_weights(self.output_dir / "model.safetensors", weights)
        with self._lock:
            self._eval_history.append(result)
            if self._best_eval is None or val_loss < self._best_eval.val_loss:
                self._best_eval = result
            self._version += 1
        self._emit(result)
        return result

    def _sample(self) -> None:
        params = SamplingParams(max_new_tokens=self.settings.sample_tokens, temperature=0.8, top_k=50,
                                seed=self.settings.seed)
        for prompt in self.settings.sample_prompt:
            with distributed.whole_model(self.ranks, self.train_module):
                text = "".join(stream_text(self.model, self.tokenizer, prompt, params))
            self._sample_log.append({"step": self._step, "prompt": prompt, "text": text})
            self._emit(SampleProduced(self._step, prompt, text))

    def _finish(self, reason: str) -> None:
        if self.ranks.is_main:
            run_files.write_seed_logs(self.output_dir)
            run_files.write_loss_plot(self.output_dir)
        self.exit_reason = reason
        self._turns.set_training(False)
        self._set_state(RunState.FINISHED)
        checkpoint = str(self.output_dir / run_files.CHECKPOINT)
        self._emit(RunFinished(self._step, reason, checkpoint))


def _tuples(value):
    """JSON turned Python's RNG state tuples into lists; turn them back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
