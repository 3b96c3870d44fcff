"""The run as its clients see it: every event folded into one snapshot, then passed on.

The engine publishes each event here. The store applies it to the run's
cumulative state under a lock, stamps it with the run's id, then hands it to
every subscriber, in order. ``snapshot()`` returns an immutable ``RunSnapshot``
of that state, cheap enough for a UI to poll a few times a second. A finished
run opened for viewing is the same store, filled from the run's logs.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from typing import Callable

from gemma_core.run.history import BoundedSeries, RunHistory
from gemma_core.run.samples_log import SampleHistory
from gemma_core.run.events import (CheckpointSaved, EvalResult, Event, LayerStats, LogMessage, RunFailed,
                                     RunSnapshot, RunState, SampleProduced, StateChanged, StepMetrics,
                                     StepSkipped)

MESSAGES_KEPT = 50  # the snapshot shows the last 20 of them

Subscriber = Callable[[Event], None]


class RunStateStore:
    def __init__(self, run_id: str, output_dir: str, max_steps: int, preset: str | None,
                 state: RunState = RunState.STARTING) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._version = 0
        self._state = state
        self._step = 0
        self._max_steps = max_steps
        self._tokens_seen = 0
        self._latest: StepMetrics | None = None
        self._train_history = BoundedSeries()
        self._lr_history = BoundedSeries()
        self._eval_history = BoundedSeries(512)
        self._best_eval: EvalResult | None = None
        self._last_checkpoint: CheckpointSaved | None = None
        self._layer_stats: LayerStats | None = None
        self._samples = SampleHistory()
        self._messages: list[LogMessage] = []
        self._error: str | None = None
        self._error_internal = False
        self._skipped_steps = 0
        self._output_dir = output_dir
        self._preset = preset
        self._device = ""
        self._dtype = ""
        self._n_parameters = 0

    # ------------------------------------------------------------- subscribers
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every later event; returns the function that unsubscribes."""
        with self._lock:
            self._subscribers = self._subscribers + (callback,)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        with self._lock:
            kept = list(self._subscribers)
            if callback in kept:
                kept.remove(callback)
            self._subscribers = tuple(kept)

    # ------------------------------------------------------------------ events
    def publish(self, event: Event) -> Event:
        """Apply ``event`` to the run's state, then deliver it; returns it as delivered."""
        if not event.run_id:
            event = dataclasses.replace(event, run_id=self.run_id)
        with self._lock:
            self._apply(event)
            self._version += 1
            subscribers = self._subscribers
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a client's bug must not stop training
                traceback.print_exc()
        return event

    def _apply(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            self._latest = event
            self._step, self._tokens_seen = event.step, event.tokens_seen
            self._train_history.append((event.step, event.tokens_seen, event.loss))
            self._lr_history.append((event.step, event.learning_rate))
        elif isinstance(event, LayerStats):
            self._layer_stats = event
        elif isinstance(event, EvalResult):
            self._eval_history.append(event)
            if self._best_eval is None or event.val_loss < self._best_eval.val_loss:
                self._best_eval = event
        elif isinstance(event, CheckpointSaved):
            self._last_checkpoint = event
        elif isinstance(event, SampleProduced):
            self._samples.add(event)
        elif isinstance(event, LogMessage):
            self._keep(event)
        elif isinstance(event, StateChanged):
            self._state = event.state
        elif isinstance(event, StepSkipped):
            self._skipped_steps += 1
        elif isinstance(event, RunFailed):
            self._error, self._error_internal = event.message, event.internal
            self._state = RunState.FAILED

    def _keep(self, message: LogMessage) -> None:
        self._messages.append(message)
        del self._messages[:-MESSAGES_KEPT]

    def keep_message(self, message: LogMessage) -> None:
        """Show a message in snapshots without publishing it (a traceback for --debug)."""
        with self._lock:
            self._keep(message)
            self._version += 1

    # ----------------------------------------------------------- run facts
    def set_run_facts(self, *, device: str, dtype: str, n_parameters: int) -> None:
        with self._lock:
            self._device, self._dtype, self._n_parameters = device, dtype, n_parameters
            self._version += 1

    def set_position(self, *, step: int, tokens_seen: int, skipped_steps: int,
                     last_checkpoint: CheckpointSaved | None) -> None:
        """Where a resumed run stands, before its first new step."""
        with self._lock:
            self._step, self._tokens_seen, self._skipped_steps = step, tokens_seen, skipped_steps
            self._last_checkpoint = last_checkpoint
            self._version += 1

    def load_history(self, history: RunHistory, *, position_from_logs: bool = False) -> None:
        """Replay a run's logged steps and evaluations (a resumed or a finished run).

        ``position_from_logs``: the last logged step is where the run stands (a
        finished run; a resumed one takes its position from its checkpoint).
        """
        with self._lock:
            if position_from_logs and history.last_step is not None:
                self._latest = history.last_step
                self._step, self._tokens_seen = history.last_step.step, history.last_step.tokens_seen
            for metrics in history.steps:
                self._train_history.append((metrics.step, metrics.tokens_seen, metrics.loss))
                self._lr_history.append((metrics.step, metrics.learning_rate))
            for result in history.evals:
                self._apply(result)
            self._version += 1

    def load_samples(self, samples: list[SampleProduced]) -> None:
        """Replay a run's logged samples (``samples.jsonl``: a resumed or a finished run)."""
        with self._lock:
            for sample in samples:
                self._samples.add(dataclasses.replace(sample, run_id=sample.run_id or self.run_id))
            self._version += 1

    @property
    def state(self) -> RunState:
        with self._lock:
            return self._state

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return RunSnapshot(
                version=self._version, state=self._state, step=self._step,
                max_steps=self._max_steps, tokens_seen=self._tokens_seen, latest=self._latest,
                train_history=self._train_history.snapshot(), lr_history=self._lr_history.snapshot(),
                eval_history=self._eval_history.snapshot(), best_eval=self._best_eval,
                last_checkpoint=self._last_checkpoint, layer_stats=self._layer_stats,
                messages=tuple(self._messages[-20:]), error=self._error,
                output_dir=self._output_dir, device=self._device, dtype=self._dtype,
                preset=self._preset, n_parameters=self._n_parameters,
                skipped_steps=self._skipped_steps, run_id=self.run_id, error_internal=self._error_internal,
                samples=self._samples.snapshot())
