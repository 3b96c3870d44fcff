"""A run that does not train: fixed, deterministic data for tests and screenshots.

``PreviewEngine`` is a ``RunHandle`` (``gemma_core.run.handle``) and serves
one ``RunSnapshot`` built by ``preview_snapshot``: curves from a formula and a
seeded random generator, no clock, no threads. Pane snapshot tests depend on
that: the same inputs always draw the same screen.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import Future
from dataclasses import replace

from gemma_core.model.config import GemmaConfig
from gemma_core.model.sampling import GenerationStats, SamplingParams
from gemma_core.model.presets import preset
from studio_preview_tokens import preview_choices
from gemma_core.train.optim import Schedule
from gemma_core.run.events import (
    CheckpointSaved,
    EvalResult,
    LayerProbe,
    LayerStats,
    LogMessage,
    RunSnapshot,
    RunState,
    StepMetrics,
)

TOKENS_PER_STEP = 16 * 256


def _loss_at(step: int) -> float:
    return 1.55 + 6.8 * math.exp(-step / 160) + 0.9 * math.exp(-step / 900)


def _probe_at(step: int, n_layers: int, n_heads: int = 4) -> tuple[LayerProbe, ...]:
    """Plausible per-layer probe values: attention sharpens (entropy falls) as the run learns,
    fastest in the sliding layers; the residual stream grows with depth and with training."""
    learned = 1 - math.exp(-step / 300)
    layers = []
    for i in range(n_layers):
        full = i % 6 == 5
        start = 3.2 if full else 2.6
        heads = tuple(round(start * (1 - (0.35 if full else 0.6) * learned) + 0.15 * math.sin(i + 2 * h), 6)
                      for h in range(n_heads))
        layers.append(LayerProbe(i, "full" if full else "sliding", heads,
                                 round(1.0 + 0.12 * i * (0.5 + learned), 6)))
    return tuple(layers)


def preview_snapshot(step: int = 640, max_steps: int = 1500, n_layers: int = 18,
                     state: RunState = RunState.RUNNING, error: str | None = None,
                     seed: int = 0, optimizer: str = "adamw") -> RunSnapshot:
    """A plausible run ``step`` steps in, identical on every call with the same arguments."""
    rng = random.Random(seed)
    peak_lr, muon_peak_lr = 2e-3, 2e-2
    schedule = Schedule(max_steps, warmup_steps=50)

    def lr_at(s: int) -> float:
        return peak_lr * schedule.factor(s)

    train = tuple((s, s * TOKENS_PER_STEP, _loss_at(s) * (1 + rng.gauss(0, 0.035)))
                  for s in range(1, step + 1))
    lrs = tuple((s, lr_at(s)) for s in range(1, step + 1))
    evals = tuple(
        EvalResult(step=s, tokens_seen=s * TOKENS_PER_STEP, val_loss=_loss_at(s) + 0.08,
                   perplexity=math.exp(_loss_at(s) + 0.08),
                   bits_per_byte=(_loss_at(s) + 0.08) / math.log(2) / 3.9, layers=_probe_at(s, n_layers))
        for s in range(100, step + 1, 100))
    best = min(evals, key=lambda e: e.val_loss) if evals else None
    latest = None
    if step:
        latest = StepMetrics(step=step, max_steps=max_steps, tokens_seen=step * TOKENS_PER_STEP,
                             loss=train[-1][2], learning_rate=lrs[-1][1], grad_norm=0.42,
                             learning_rates={"adamw": lrs[-1][1], **(
                                 {"muon": muon_peak_lr * schedule.factor(step)} if optimizer == "muon" else {})},
                             tokens_per_s=3069.0, elapsed_s=step * 1.33,
                             eta_s=(max_steps - step) * 1.33, mfu=None)
    layer_values = tuple(0.2 + 0.8 * abs(math.sin(1.3 * i + 0.4)) for i in range(n_layers))
    checkpoint = None
    if step >= 250:
        saved = step - step % 250
        checkpoint = CheckpointSaved(step=saved, path=f"output/checkpoint-{saved}",
                                     wall_time=1_700_000_000.0 + saved)
    messages = (LogMessage("info", "training on cpu in float32"),)
    if error:
        messages += (LogMessage("error", error),)
    return RunSnapshot(
        version=step + 1, state=state, step=step, max_steps=max_steps,
        tokens_seen=step * TOKENS_PER_STEP, latest=latest, train_history=train,
        lr_history=lrs, eval_history=evals, best_eval=best, last_checkpoint=checkpoint,
        layer_stats=LayerStats(step=step, name="grad norm", values=layer_values) if step else None,
        messages=messages, error=error, output_dir="output", device="cpu", dtype="float32",
        preset="demo", n_parameters=5_577_728)


class PreviewChatJob:
    """A finished reply handed out a word per ``take()``: streaming without a clock."""

    def __init__(self, step: int, text: str, error: str | None = None,
                 stats: GenerationStats | None = None, alternatives: int = 0) -> None:
        self.step = step
        self.error = error
        self.stats = stats or GenerationStats(finish_reason="stop")
        self._words = text.split(" ")
        self._given = 0
        self.cancelled = False
        # Each word's made-up probability and alternatives, where asked for (preview_tokens.py).
        self._choices = preview_choices(self._words, alternatives) if alternatives else []
        self._choices_given = 0

    @property
    def done(self) -> bool:
        return self.cancelled or self._given >= len(self._words)

    def take(self) -> str:
        if self.done:
            return ""
        word = self._words[self._given]
        self._given += 1
        return " " + word  # a continuation: the prompt's next word, after a space

    def take_tokens(self) -> list:
        """The tokens of the words taken so far, not handed out before."""
        given, self._choices_given = self._choices_given, min(self._given, len(self._choices))
        return self._choices[given:self._choices_given]

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self):
        while not self.done:
            yield self.take()


def _done() -> Future:
    """A command's outcome, already there: the preview does what it is told at once."""
    future: Future = Future()
    future.set_result(None)
    return future


class PreviewEngine:
    """Serves a fixed snapshot; records every control call in ``calls``."""

    def __init__(self, snapshot: RunSnapshot | None = None, model_config: GemmaConfig | None = None,
                 reply: str = "Thou art the very glass of fashion, my good lord.",
                 alive: bool = False, reply_stats: GenerationStats | None = None) -> None:
        self._snapshot = snapshot or preview_snapshot()
        self.reply_stats = reply_stats  # how every reply ends (default: the model ended it)
        self.model_config = model_config if model_config is not None else preset("seed-270m")
        self.reply = reply
        self.owns_run = True
        self.trains = True
        self.calls: list[str] = []
        self.chat_requests: list[tuple[str, SamplingParams]] = []
        self._alive = alive

    def snapshot(self) -> RunSnapshot:
        return self._snapshot

    def set_snapshot(self, snapshot: RunSnapshot) -> None:
        self._snapshot = snapshot

    def _state(self, state: RunState) -> None:
        self._snapshot = replace(self._snapshot, state=state, version=self._snapshot.version + 1)

    def pause(self) -> Future:
        self.calls.append("pause")
        self._state(RunState.PAUSED)
        return _done()

    def unpause(self) -> Future:
        self.calls.append("unpause")
        self._state(RunState.RUNNING)
        return _done()

    def save_now(self) -> Future:
        self.calls.append("save_now")
        return _done()

    def eval_now(self) -> Future:
        self.calls.append("eval_now")
        return _done()

    def stop(self, save: bool = True) -> Future:
        self.calls.append(f"stop(save={save})")
        self._alive = False
        self._state(RunState.STOPPED)  # before its last step, like a real run stopped with x
        return _done()

    def join(self, timeout: float | None = None) -> bool:
        return not self._alive

    def close(self) -> None:
        self.calls.append("close")

    def is_alive(self) -> bool:
        return self._alive

    def chat(self, prompt: str, params: SamplingParams, alternatives: int = 0) -> PreviewChatJob:
        self.chat_requests.append((prompt, params))
        return PreviewChatJob(self._snapshot.step, self.reply, stats=self.reply_stats, alternatives=alternatives)
