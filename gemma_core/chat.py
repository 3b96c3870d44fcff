"""Chat with a model while it trains: jobs, one shared inference copy, turns on a CPU.

* ``ChatJob`` is a reply being written: the generating thread ``put``s text
  pieces and ``finish``es it; a client iterates it, or polls ``take()``. A reply asked
  for ``alternatives`` also carries each token's probability and the likeliest others
  (``put_token``/``take_tokens``; ``gemma_core/model/token_choices.py``).
* ``LiveWeights`` guards the weights a trainer updates: the optimizer step and
  the step number the weights belong to change together, under one lock.
* ``InferenceCopy`` is one frozen copy of those weights that every chat shares.
  It is refreshed when the weights have moved on and no reply is using it, so
  concurrent chats cost one copy, not one each.
* ``ComputeTurns`` has generation done on a CPU by the thread that owns the
  cores, between training steps, one waiting reply at a time, so two torch
  computations never fight over the cores.
* ``ChatService`` ties them together; the training engine and the viewer of a
  finished run both answer chats through one.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from gemma_core.errors import UserError
from gemma_core.model.sampling import GenerationStats, SamplingParams
from gemma_core.model.token_choices import MAX_ALTERNATIVES, ChoicesFromLogits, TokenChoice, ends_of
from gemma_core.safe_text import require_utf8

if TYPE_CHECKING:  # torch is imported where a model is used: a run's clients use jobs without it
    import torch

    from gemma_core.model.model import Gemma3Model
    from gemma_core.tokenizers.tokenizer import Tokenizer

# Chat tokens a turn decodes at least; between two training steps on a CPU a turn goes on
# while replies have time owed (``ComputeTurns.has_time_left``).
TOKENS_PER_TURN = 4
# While a trainer owns the cores, replies get at most this share of their time: replies
# streamed back to back then leave training within the studio's budget of its speed, and are
# written at a fraction of the machine's decoding speed, faster than one reads (BENCHMARKS.md).
CHAT_SHARE_WHILE_TRAINING = 0.12
CHAT_ALLOWANCE_CAP_S = 0.25  # a reply after a quiet spell starts with a burst of this long
# A piece that ends a turn early and is not handed to the client: work whose pieces differ
# in cost (a batch scored, a token decoded) says itself where its turns end.
END_OF_TURN = object()


def check_chat_request(prompt: str, params: SamplingParams, alternatives: int = 0) -> None:
    """A request that cannot be answered is refused at the call (``UserError``), not
    reported later through the job: it is the caller's mistake, not the run's."""
    if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 0 <= alternatives <= MAX_ALTERNATIVES:
        raise UserError(f"alternatives must be a whole number from 0 to {MAX_ALTERNATIVES}, got {alternatives!r}")
    if not isinstance(prompt, str):
        raise UserError(f"the prompt must be text, got {type(prompt).__name__}")
    require_utf8(prompt, "the prompt")
    if not isinstance(params, SamplingParams):
        raise UserError(f"params must be SamplingParams, got {type(params).__name__}")
    params.validate()


class ChatJob:
    """A continuation being generated; iterate it for text pieces, or poll ``take()``."""

    def __init__(self, prompt: str, params: SamplingParams, step: int) -> None:
        self.prompt = prompt
        self.params = params
        self.step = step  # the optimizer step whose weights answer (-1: not known yet)
        self.error: str | None = None
        self.stats = GenerationStats()  # tokens in and out, and why it ended, once done
        self._pieces: queue.Queue[Any] = queue.Queue()
        self._tokens: deque[TokenChoice] = deque()  # each token's probability, where asked for
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._step_known = threading.Event()
        if step >= 0:
            self._step_known.set()

    def set_step(self, step: int) -> None:
        self.step = step
        self._step_known.set()

    def wait_for_step(self, timeout: float | None = None) -> bool:
        return self._step_known.wait(timeout)

    @classmethod
    def failed(cls, prompt: str, params: SamplingParams, step: int, error: str) -> "ChatJob":
        """A job that could not start, finished at once with ``error``."""
        job = cls(prompt, params, step)
        job.finish(error)
        return job

    # ------------------------------------------------------------ producer side
    def put(self, piece: Any) -> None:
        self._pieces.put(piece)

    def put_token(self, choice: TokenChoice) -> None:
        """A generated token's probability and alternatives: put before the text that shows
        it, so a client holding the text holds its tokens."""
        self._tokens.append(choice)

    def finish(self, error: str | None = None) -> None:
        self.error = error
        self._step_known.set()  # a job that failed before its weights were chosen keeps its step
        self._done.set()
        self._pieces.put(None)

    # ------------------------------------------------------------ consumer side
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
        return "".join(self.take_pieces())

    def take_pieces(self) -> list[Any]:
        """Pieces produced since the last call (text, or what a ``compute`` job yields)."""
        out = []
        while True:
            try:
                piece = self._pieces.get_nowait()
            except queue.Empty:
                break
            if piece is not None:
                out.append(piece)
        return out

    def take_tokens(self) -> list[TokenChoice]:
        """Tokens' choices recorded since the last call (none unless the reply was asked for
        ``alternatives``); never blocks."""
        out = []
        while self._tokens:
            out.append(self._tokens.popleft())
        return out

    def __iter__(self) -> Iterator[str]:
        while True:
            piece = self._pieces.get()
            if piece is None:
                return
            yield piece

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class _Chunk:
    """A piece of a reply's work, handed to the thread that owns the cores."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.running = False
        self.finished = False
        self.error: Exception | None = None


class ComputeTurns:
    """Runs generation on the thread that owns the cores, in turns.

    While a trainer owns them, replies' work runs between two optimizer steps for as long
    as replies have time owed (``CHAT_SHARE_WHILE_TRAINING`` of the time, earned by each
    step in proportion to its length): the work asks ``has_time_left`` and goes on until
    the turn's time is spent, so a long step buys a reply many tokens, not one chunk's.
    A server with nothing else to do (``serve``) runs every chunk as it comes. While
    nobody owns them (paused, finished, a studio viewing a run) a reply's own thread does
    its work.

    The owner does the work itself, rather than letting the waiting thread go ahead,
    because on a CPU every thread that computes with torch brings its own OpenMP team,
    and two teams on the same cores slow each other down: decoding in a second thread
    was slower than the same decoding in the thread that had computed before (BENCHMARKS.md).

    Between steps the owner decodes on one thread (``_one_thread``): a decoding step is
    hundreds of tiny operations, and each one a team of two runs waits at a barrier for
    the other thread; on a busy 2-core machine that thread is often not scheduled, and
    the trainer's thread decoded many times slower per token than with one thread
    (bench/chat.py; the figures: BENCHMARKS.md).
    """

    def __init__(self, chat_share: float = CHAT_SHARE_WHILE_TRAINING,
                 allowance_cap_s: float = CHAT_ALLOWANCE_CAP_S,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._condition = threading.Condition()
        self._waiting: deque[_Chunk] = deque()  # first come, first served
        self._owned = False
        # Seconds of chat work the trainer still owes: each training second earns
        # share / (1 - share) of one, each chunk run spends its own time.
        self._chat_share, self._allowance_cap_s = chat_share, allowance_cap_s
        self._allowance_s = allowance_cap_s
        self._last_turn: float | None = None
        self._clock = clock
        self._turn: tuple[int, float] | None = None  # (owner's thread id, when its turn ends)

    def run_chunk(self, work: Callable[[], None]) -> None:
        """Called by a reply's thread: have ``work`` done by the owner, or do it now if none."""
        chunk = _Chunk(work)
        with self._condition:
            if self._owned:
                self._waiting.append(chunk)
                self._condition.notify_all()
                while not chunk.finished and (self._owned or chunk.running):
                    self._condition.wait(0.05)
                if not chunk.finished:  # the owner let go before taking it
                    self._waiting.remove(chunk)
        if not chunk.finished:
            work()
        elif chunk.error is not None:
            raise chunk.error

    def has_time_left(self) -> bool:
        """Asked by work during its turn: may it go on? True only on the owner's thread,
        in a turn between training steps whose time is not spent yet."""
        turn = self._turn
        return turn is not None and turn[0] == threading.get_ident() and self._clock() < turn[1]

    def between_steps(self) -> None:
        """Called by the trainer after each step: run waiting chunks while replies have time
        owed (``CHAT_SHARE_WHILE_TRAINING`` of the time since the last turn)."""
        now = self._clock()
        if self._last_turn is not None:
            earned = (now - self._last_turn) * self._chat_share / (1.0 - self._chat_share)
            # The cap bounds what quiet spells save up, never what one step has just earned:
            # steps longer than the cap's worth still give replies their share.
            self._allowance_s = min(max(self._allowance_cap_s, earned), self._allowance_s + earned)
        while self._allowance_s > 0:
            chunk = self._take(wait_s=0)
            if chunk is None:
                break
            start = self._clock()
            self._turn = (threading.get_ident(), start + self._allowance_s)
            try:
                with _one_thread():
                    self._run(chunk)
            finally:
                self._turn = None
                self._allowance_s -= self._clock() - start
        self._last_turn = self._clock()

    def serve(self, stop: threading.Event) -> None:
        """Own the cores until ``stop`` is set, running every chunk as it comes: the main
        thread of a process that only answers chats (``gemma-core serve``)."""
        self.own_cores(True)
        try:
            while not stop.is_set():
                chunk = self._take(wait_s=0.1)
                if chunk is not None:
                    self._run(chunk)
        finally:
            self.own_cores(False)

    def own_cores(self, active: bool) -> None:
        """The calling thread owns the cores (``True``) or lets them go (``False``)."""
        with self._condition:
            self._owned = active
            self._condition.notify_all()

    def _take(self, wait_s: float) -> _Chunk | None:
        """The first waiting chunk, marked as running; None if none comes within ``wait_s``."""
        with self._condition:
            if not self._waiting and wait_s > 0:
                self._condition.wait(wait_s)
            if not self._waiting:
                return None
            chunk = self._waiting.popleft()
            chunk.running = True
            return chunk

    def _run(self, chunk: _Chunk) -> None:
        try:
            chunk.work()
        except Exception as err:  # the reply's error, reported by the reply's thread
            chunk.error = err
        except BaseException:  # Ctrl-C in the owner: the reply ends, the owner stops
            chunk.error = RuntimeError("interrupted")
            raise
        finally:
            with self._condition:
                chunk.running = False
                chunk.finished = True
                self._condition.notify_all()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch computes on one thread inside, on as many as before after (see ComputeTurns)."""
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LiveWeights:
    """A model's weights and the optimizer step they belong to, changed together."""

    def __init__(self, model: Gemma3Model, step: int = 0) -> None:
        self.model = model
        self.step = step
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def updating(self, step_after: int) -> Iterator[None]:
        """Hold the weights while the optimizer changes them; they then belong to ``step_after``."""
        with self.lock:
            yield
            self.step = step_after


class WeightsForChat(Protocol):
    def acquire(self) -> tuple[Gemma3Model, int]: ...  # a model to decode with and its step
    def release(self) -> None: ...


class FixedWeights:
    """Weights that never change (a finished run): every reply uses the model itself."""

    def __init__(self, model: Gemma3Model, step: int) -> None:
        self.model, self.step = model, step

    def acquire(self) -> tuple[Gemma3Model, int]:
        return self.model, self.step

    def release(self) -> None:
        return None


class InferenceCopy:
    """One frozen copy of live weights, shared by every reply, refreshed when they move on."""

    def __init__(self, live: LiveWeights) -> None:
        self._live = live
        self._lock = threading.Lock()
        self._model: Gemma3Model | None = None
        self._step = -1
        self._users = 0

    def acquire(self) -> tuple[Gemma3Model, int]:
        with self._lock:
            stale = self._model is None or self._step != self._live.step
            if stale and self._users == 0:  # never change weights a reply is decoding with
                self._refresh()
            self._users += 1
            return self._model, self._step

    def release(self) -> None:
        with self._lock:
            self._users -= 1

    def _refresh(self) -> None:
        import torch

        with self._live.lock, torch.no_grad():
            if self._model is None:
                self._model = copy.deepcopy(self._live.model).eval()
                for param in self._model.parameters():
                    param.grad = None  # a copy taken mid-step must not carry gradients
                    param.requires_grad_(False)
            else:
                for mine, theirs in zip(self._model.parameters(), self._live.model.parameters()):
                    mine.copy_(theirs)
            self._step = self._live.step


# Work on the weights: given the model, its compute precision and the job, the job's pieces.
PiecesOf = Callable[["Gemma3Model", "torch.dtype", ChatJob], Iterator[Any]]


def _on_cpu(model: Gemma3Model) -> bool:
    return model.embed_tokens.weight.device.type == "cpu"


class ChatService:
    """Answers chats from ``weights`` in background threads, taking turns with training on a CPU."""

    def __init__(self, weights: WeightsForChat, tokenizer: Tokenizer, dtype: torch.dtype,
                 turns: ComputeTurns | None = None) -> None:
        self.weights = weights
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.turns = turns
        self._threads: list[threading.Thread] = []

    def chat(self, prompt: str, params: SamplingParams, special_tokens: bool = False,
             alternatives: int = 0) -> ChatJob:
        """Continue ``prompt`` in a background thread; ``special_tokens``: the prompt is a chat
        template's output, whose turn markers are special tokens; ``alternatives`` > 0: each
        token also comes with its probability and that many likeliest others
        (``job.take_tokens()``), for one softmax and one top-k per token.

        Returns once the weights that answer are chosen (their step is the job's): on a CPU
        that waits for the end of the training step under way.

        Every torch computation of a reply, copying the weights included, runs on the thread
        that owns the cores or on the reply's own thread, never on the caller's: on a CPU a
        long-lived thread that has computed once keeps a second OpenMP team alive, and while
        it lives, training's parallel regions wait for their threads instead of finding them
        spinning (training is measurably slower for as long as the caller lives: BENCHMARKS.md).

        The request is checked by the run handle that took it (``check_chat_request``), not here."""

        def pieces_of(model: Gemma3Model, dtype: torch.dtype, job: ChatJob) -> Iterator[str]:
            from gemma_core.model.generation import stream_text  # torch: clients of jobs go without it

            observe = None
            if alternatives > 0:
                observe = ChoicesFromLogits(self.tokenizer, alternatives, ends_of(params, self.tokenizer.eos_id),
                                            job.put_token).observe
            return stream_text(model, self.tokenizer, prompt, params, cancel=job.cancelled, dtype=dtype,
                               stats=job.stats, special_tokens=special_tokens, observe=observe)

        return self.compute(pieces_of, TOKENS_PER_TURN, prompt=prompt, params=params)

    def compute(self, pieces_of: PiecesOf, per_turn: int = 1, prompt: str = "",
                params: SamplingParams | None = None) -> ChatJob:
        """Any work on the weights, as a reply is done: ``pieces_of(model, dtype, job)`` yields
        the job's pieces (text, scores, ...), ``per_turn`` of them or more per turn between two
        training steps on a CPU. Returns once the weights are chosen, as ``chat`` does."""
        job = ChatJob(prompt, params if params is not None else SamplingParams(), step=-1)
        thread = threading.Thread(target=self._run, args=(job, pieces_of, per_turn),
                                  name="gemma-chat", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        job.wait_for_step()
        return job

    def _on_the_owner(self, work: Callable[[], None]) -> None:
        if self.turns is not None:
            self.turns.run_chunk(work)
        else:
            work()

    def _run(self, job: ChatJob, pieces_of: PiecesOf, per_turn: int) -> None:
        acquired: list[tuple[Gemma3Model, int]] = []
        pieces: Iterator[Any] | None = None
        finished = False

        def turn() -> None:
            nonlocal pieces, finished
            if pieces is None:
                acquired.append(self.weights.acquire())
                model, step = acquired[0]
                job.set_step(step)
                pieces = pieces_of(model, self.dtype, job)
                if not _on_cpu(model):  # an accelerator's replies decode on their own thread
                    return
            # The reply's first tokens come in the turn that chose its weights: on a CPU a
            # turn between two training steps comes once a step, seconds apart on demo.
            finished = self._one_turn(job, pieces, per_turn)

        try:
            self._on_the_owner(turn)
            on_cpu = _on_cpu(acquired[0][0])
            while not finished:
                if on_cpu and self.turns is not None:
                    self.turns.run_chunk(turn)
                else:
                    turn()
            job.finish()
        except Exception as err:  # shown in the chat pane, never a traceback
            job.finish(f"{type(err).__name__}: {err}")
        finally:
            if acquired:
                self.weights.release()

    def _one_turn(self, job: ChatJob, pieces: Iterator[Any], per_turn: int) -> bool:
        """Hand ``per_turn`` pieces to the job, and more while the owner's turn has time left
        (``END_OF_TURN`` may end it sooner); True once the pieces have run out."""
        handed = 0
        for piece in pieces:
            if piece is not END_OF_TURN:
                job.put(piece)
                handed += 1
                if handed < per_turn:
                    continue
            if self.turns is None or not self.turns.has_time_left():
                return False
        return True

    def threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.is_alive()]
