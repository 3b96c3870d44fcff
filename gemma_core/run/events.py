"""What the training engine tells its clients: immutable events and snapshots.

Events are delivered to subscribers on the training thread, in order; a
subscriber must return quickly (append to a queue, post a message). A
``RunSnapshot`` is the cumulative state of a run: everything the events said so
far, folded together (``state_store``). A UI that polls it a few times a second
needs nothing else. Every event and snapshot names its run (``run_id``), which
stays the same when the run is resumed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RunState(str, enum.Enum):
    STARTING = "starting"  # preparing data and model
    RUNNING = "running"
    PAUSED = "paused"
    EVALUATING = "evaluating"
    SAVING = "saving"
    FINISHED = "finished"  # reached max_steps
    STOPPED = "stopped"  # stopped on request before max_steps, with a checkpoint to resume
    FAILED = "failed"
    VIEWING = "viewing"  # a finished run opened for inspection, no training


# States after which the run does nothing more.
ENDED_STATES = frozenset({RunState.FINISHED, RunState.STOPPED, RunState.FAILED})


@dataclass(frozen=True)
class StepMetrics:
    step: int  # optimizer steps done
    max_steps: int
    tokens_seen: int
    loss: float  # mean training loss of this optimizer step
    learning_rate: float
    grad_norm: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float | None
    mfu: float | None = None  # model FLOPs utilisation, on a GPU with a known peak
    learning_rates: dict[str, float] = field(default_factory=dict)  # each optimiser's ("adamw", "muon")
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class LayerProbe:
    """One decoder layer on the run's fixed probe prompt, at an evaluation (``run.layer_probe``)."""

    index: int
    type: str  # "sliding" or "full"
    entropy: tuple[float, ...]  # nats, per query head: its attention entropy averaged over the queries
    residual_rms: float  # the residual stream after the layer: RMS over features, mean over positions

    @property
    def entropy_mean(self) -> float:
        return sum(self.entropy) / len(self.entropy) if self.entropy else float("nan")


@dataclass(frozen=True)
class EvalResult:
    step: int
    tokens_seen: int
    val_loss: float
    perplexity: float
    bits_per_byte: float
    run_id: str = ""  # stamped by the run's state store
    # Each layer on the probe prompt at this step; empty where not measured (an older log,
    # or a run whose weights are sharded over several ranks).
    layers: tuple[LayerProbe, ...] = ()


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str
    wall_time: float  # time.time() when written
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class LayerStats:
    """One value per decoder layer, for the layer map's shading."""

    step: int
    name: str  # what the values are, e.g. "grad norm"
    values: tuple[float, ...]
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class SampleProduced:
    step: int
    prompt: str
    text: str
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class LogMessage:
    level: str  # "info", "warning" or "error"
    text: str
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class StateChanged:
    state: RunState
    step: int
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class StepSkipped:
    """A step whose loss or gradient was not finite: no update was made."""

    step: int  # the step that was attempted (steps done + 1)
    in_a_row: int
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class RunFailed:
    step: int
    message: str  # one line, fit to show a user
    internal: bool = False  # a bug (exit status 1), not the user's input or environment (2)
    run_id: str = ""  # stamped by the run's state store


@dataclass(frozen=True)
class RunFinished:
    step: int
    reason: str  # "completed" or "stopped"
    checkpoint: str | None
    run_id: str = ""  # stamped by the run's state store


Event = (StepMetrics | EvalResult | CheckpointSaved | LayerStats | SampleProduced
         | LogMessage | StateChanged | StepSkipped | RunFailed | RunFinished)


@dataclass(frozen=True)
class RunSnapshot:
    """Everything a client shows about a run, as of ``version``.

    Histories are bounded: they are thinned as they grow, so a long run costs
    the same memory and drawing time as a short one.
    """

    version: int
    state: RunState
    step: int
    max_steps: int
    tokens_seen: int
    latest: StepMetrics | None
    train_history: tuple[tuple[int, int, float], ...]  # (step, tokens_seen, loss)
    lr_history: tuple[tuple[int, float], ...]  # (step, learning_rate)
    eval_history: tuple[EvalResult, ...]
    best_eval: EvalResult | None
    last_checkpoint: CheckpointSaved | None
    layer_stats: LayerStats | None
    messages: tuple[LogMessage, ...]  # the most recent few
    error: str | None
    output_dir: str
    device: str
    dtype: str
    preset: str | None
    n_parameters: int
    skipped_steps: int = 0
    run_id: str = ""
    error_internal: bool = False  # the error is a bug in this program, not the user's
    extra: dict = field(default_factory=dict)
    # The run's --sample_prompt continuations, by step (a bounded spread over the run).
    samples: tuple[SampleProduced, ...] = ()
