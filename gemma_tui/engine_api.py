"""What the studio needs from an engine: the shape shared by ``TrainingEngine``
(a live run in this process), ``RemoteEngine`` (a run in another process, attached),
``RunViewer`` (a finished run) and the preview engine of tests.

The app talks to nothing else, so any object with these methods can drive it.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from gemma_core.model.config import GemmaConfig
from gemma_core.model.sampling import GenerationStats, SamplingParams
from gemma_core.run.events import RunSnapshot


class ChatJob(Protocol):
    step: int  # the optimizer step whose weights answer
    done: bool
    error: str | None
    stats: GenerationStats  # how it ended (finish_reason, a prompt cut to fit), once done

    def take(self) -> str: ...  # text produced since the last call; never blocks
    def cancel(self) -> None: ...
    def __iter__(self) -> Iterator[str]: ...


class StudioEngine(Protocol):
    """Commands return at once; an engine may return a handle on their outcome
    (``TrainingEngine`` returns a ``concurrent.futures.Future``), which the studio
    does not wait on: what happened shows in the next snapshots."""

    model_config: GemmaConfig | None  # None until the model is prepared
    owns_run: bool  # True: the run lives in this process (quitting asks); False: attached (quit detaches)

    def snapshot(self) -> RunSnapshot: ...
    def pause(self) -> object: ...
    def unpause(self) -> object: ...
    def save_now(self) -> object: ...
    def eval_now(self) -> object: ...
    def stop(self, save: bool = True) -> object: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def is_alive(self) -> bool: ...
    def chat(self, prompt: str, params: SamplingParams) -> ChatJob: ...
    def close(self) -> None: ...  # let go of the run (an attached engine stops following it)


class InspectableEngine(Protocol):
    """What the Inspect screen needs (``gemma_tui/inspection.py``), one of two ways. An engine
    with neither shows why Inspect cannot run there.

    * ``compute`` and ``tokenizer`` (``TrainingEngine``, ``RunViewer``): ``compute(pieces_of)``
      runs ``pieces_of(model, dtype, job)`` on the weights as a chat reply is done, and
      returns a job whose pieces come by ``take_pieces()`` once ``wait()`` returns.
    * ``inspect(prompt, top_k)`` (``RemoteEngine``): the run's server does that, and returns
      the ``gemma_core.inspect.Inspection``.
    """

    tokenizer: object | None  # None until the model is prepared

    def compute(self, pieces_of, per_turn: int = 1) -> object: ...
    def inspect(self, prompt: str, top_k: int) -> object: ...
