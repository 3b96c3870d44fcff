"""A run as its clients drive it: the one interface the studio, the CLI and the server use.

Three things satisfy it: ``train.engine.TrainingEngine`` (a run training in this process),
``run.viewer.RunViewer`` (a finished run opened here) and ``serve.client.RemoteEngine`` (a
run in another process, reached through its server). A client that holds a ``RunHandle``
does not know which it has: it reads snapshots, sends commands and asks for replies.

``LocalRun`` is a ``RunHandle`` whose weights are in this process: what a server serves
(it needs the tokenizer, the events as they happen, and passes on the weights).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Callable, Protocol

from gemma_core.chat import ChatJob, PiecesOf
from gemma_core.model.config import GemmaConfig
from gemma_core.model.sampling import SamplingParams
from gemma_core.run.events import Event, RunSnapshot
from gemma_core.tokenizers.tokenizer import Tokenizer


class RunHandle(Protocol):
    """Commands return at once with a ``Future`` of their outcome, which a client may ignore:
    what happened also shows in later snapshots."""

    model_config: GemmaConfig | None  # None until the model is prepared
    trains: bool  # a run training: commands mean something (a server says it as run_info["trains"])
    owns_run: bool  # the run lives in this process: a studio quitting asks; False: it detaches

    def snapshot(self) -> RunSnapshot: ...
    def pause(self) -> Future: ...
    def unpause(self) -> Future: ...
    def save_now(self) -> Future: ...
    def eval_now(self) -> Future: ...
    def stop(self, save: bool = True) -> Future: ...

    def chat(self, prompt: str, params: SamplingParams, alternatives: int = 0) -> ChatJob:
        """A reply from the current weights; a request that cannot be answered raises
        ``UserError`` here (checked once, at this call), not through the job.
        ``alternatives`` > 0: each token also carries its probability and that many likeliest
        others (``job.take_tokens()``; gemma_core/model/token_choices.py)."""

    def join(self, timeout: float | None = None) -> bool: ...
    def is_alive(self) -> bool: ...
    def close(self) -> None: ...  # let go of the run (an attached client stops following it)


class LocalRun(RunHandle, Protocol):
    """A ``RunHandle`` whose weights are in this process (a ``TrainingEngine`` or a
    ``RunViewer``): what a server serves."""

    tokenizer: Tokenizer | None  # None until the model is prepared

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]: ...
    def unsubscribe(self, callback: Callable[[Event], None]) -> None: ...

    def chat(self, prompt: str, params: SamplingParams, special_tokens: bool = False,
             alternatives: int = 0) -> ChatJob: ...

    def compute(self, pieces_of: PiecesOf, per_turn: int = 1) -> ChatJob:
        """Run ``pieces_of(model, dtype, job)`` on the weights as a chat reply is done."""
