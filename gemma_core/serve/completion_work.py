"""What an OpenAI request asks of the weights, done on them: scoring prompts and writing
continuations, with each token's log-probability where asked.

``CompletionWork`` is handed to a run's ``compute`` (it takes turns with training as chat
does) and yields ``Delta`` pieces: each a bit of one choice's text, the tokens behind it and,
on a choice's last piece, why it ended. A streamed reply sends each as it comes; a whole one
gathers them.

Prompts that are echoed with log-probabilities (how lm-evaluation-harness scores a model)
are scored a batch at a time in one forward pass each; a one-token continuation of a scored
prompt is drawn from that same pass.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch

from gemma_core.chat import END_OF_TURN, TOKENS_PER_TURN, ChatJob
from gemma_core.model.generation import Utf8Stream, sample_next, stream_text
from gemma_core.model.sampling import MAX_SEED, GenerationStats, SamplingParams
from gemma_core.model.scoring import score_sequences
from gemma_core.model.token_choices import finite, model_choice, token_bytes_of
from gemma_core.serve.openai_api import GenerationRequest

@dataclass
class TokenLogprob:
    """One token of a choice, for the ``logprobs`` of a response."""

    token: bytes
    logprob: float | None  # None: the first token of an echoed prompt (nothing predicts it)
    top: list[tuple[bytes, float]] | None  # the likeliest alternatives there, likeliest first
    offset: int  # where the token starts in the choice's text, in characters


@dataclass
class Delta:
    """A piece of one choice: its text, the tokens behind it, and on its last piece why it ended."""

    index: int
    text: str = ""
    tokens: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0  # on the last piece: the prompt's tokens, counted once per prompt
    completion_tokens: int = 0


@dataclass
class PreparedPrompt:
    ids: list[int]
    text: str  # what ``echo`` returns: the prompt as sent, or its ids decoded
    params: SamplingParams  # for its continuations (max_new_tokens fitted to the context)


class CompletionWork:
    """The pieces of one request's answer, computed on the weights a run lends."""

    def __init__(self, request: GenerationRequest, prompts: list[PreparedPrompt], tokenizer) -> None:
        self.request = request
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.scored = request.echo and request.logprobs is not None

    def __call__(self, model, dtype: torch.dtype, job: ChatJob) -> Iterator[Delta | object]:
        scores: list = []
        if self.scored:
            for score in score_sequences(model, [p.ids for p in self.prompts], top_n=self.request.logprobs or 0,
                                         dtype=dtype):
                scores.append(score)
                yield END_OF_TURN
        for p, prompt in enumerate(self.prompts):
            for j in range(self.request.n):
                if job.cancelled.is_set():
                    return
                index = p * self.request.n + j
                params = _nth_seed(prompt.params, j)
                ledger = TokenLedger(self.tokenizer, self.request.logprobs)
                echoed = ""
                if self.request.echo:
                    echoed = prompt.text
                    ledger.echo(prompt.ids, scores[p] if scores else None)
                counted = dict(prompt_tokens=len(prompt.ids) if j == 0 else 0)
                if params.max_new_tokens == 0:
                    yield Delta(index, echoed, ledger.take(), "length", completion_tokens=0, **counted)
                elif scores and params.max_new_tokens == 1:
                    yield self._one_token(index, echoed, ledger, scores[p], params, counted)
                else:
                    yield from self._continue(model, dtype, job, index, echoed, ledger, prompt, params, counted)
                yield END_OF_TURN

    def _one_token(self, index: int, echoed: str, ledger: TokenLedger, score, params: SamplingParams,
                   counted: dict) -> Delta:
        """The continuation of a scored prompt by one token, drawn from the scoring pass."""
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=score.next_logits.device).manual_seed(params.seed)
        token_id = int(sample_next(score.next_logits.unsqueeze(0), params, generator).item())
        ends = set(params.stop_token_ids) | {self.tokenizer.eos_id}
        ledger.observe(token_id, score.next_logits)
        if token_id in ends:
            return Delta(index, echoed, ledger.take(final=True, end_token=True), "stop",
                         completion_tokens=0, **counted)
        decoder = Utf8Stream(self.tokenizer)
        text = decoder.push(token_id) + decoder.flush()
        cut = min((text.find(s) for s in params.stop_strings if s in text), default=None)
        reason = "length" if cut is None else "stop"
        text = text if cut is None else text[:cut]
        ledger.emitted(text)
        return Delta(index, echoed + text, ledger.take(final=True), reason, completion_tokens=1, **counted)

    def _continue(self, model, dtype, job: ChatJob, index: int, echoed: str, ledger: TokenLedger,
                  prompt: PreparedPrompt, params: SamplingParams, counted: dict) -> Iterator[Delta | object]:
        stats = GenerationStats()
        pieces = stream_text(model, self.tokenizer, "", params, cancel=job.cancelled, dtype=dtype, stats=stats,
                             prompt_ids=prompt.ids, observe=ledger.observe if self.request.logprobs is not None
                             else None)
        if echoed:
            yield Delta(index, echoed, ledger.take())
        for n, text in enumerate(pieces, start=1):
            ledger.emitted(text)
            yield Delta(index, text, ledger.take())
            if n % TOKENS_PER_TURN == 0:
                yield END_OF_TURN
        ended_on_token = stats.finish_reason == "stop" and ledger.last_token_ends(params, self.tokenizer.eos_id)
        yield Delta(index, "", ledger.take(final=True, end_token=ended_on_token),
                    "stop" if stats.finish_reason == "stop" else "length",
                    completion_tokens=stats.completion_tokens, **counted)


def _nth_seed(params: SamplingParams, j: int) -> SamplingParams:
    """The j-th of n continuations: its own seed, so that sampled choices differ."""
    if j == 0 or params.seed is None:
        return params
    return replace(params, seed=(params.seed + j) % (MAX_SEED + 1))


class TokenLedger:
    """A choice's tokens as ``logprobs`` reports them: each once its text has been sent, with
    its offset in the choice's text. Tokens past the text (a stop string cut away) are
    dropped; the token that ended the choice (EOS) is kept, as vLLM and OpenAI do."""

    def __init__(self, tokenizer, top_n: int | None) -> None:
        self.tokenizer = tokenizer
        self.top_n = top_n
        self._pending: list[TokenLogprob] = []
        self._ready: list[TokenLogprob] = []
        self._chars = 0  # characters of token text so far
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._sent_chars = 0  # characters of the choice's text sent so far
        self._last_id: int | None = None

    def _bytes(self, token_id: int) -> bytes:
        return token_bytes_of(self.tokenizer, token_id)

    def _add(self, token_id: int, logprob: float | None, top: list[tuple[bytes, float]] | None) -> None:
        token = self._bytes(token_id)
        self._pending.append(TokenLogprob(token, logprob, top, self._chars))
        self._chars += len(self._decoder.decode(token))
        self._last_id = token_id

    def echo(self, ids: list[int], score) -> None:
        """The prompt's own tokens (sent with the echoed text)."""
        for i, token_id in enumerate(ids):
            if self.top_n is None or i == 0:
                self._add(token_id, None, None)
                continue
            logprob = finite(score.token_logprobs[i - 1])
            top = [(self._bytes(t), finite(lp)) for t, lp in score.top[i - 1]]
            self._add(token_id, logprob, _with_chosen(top, self._bytes(token_id), logprob))
        self._sent_chars = self._chars
        self._ready.extend(self._pending)
        self._pending.clear()

    def observe(self, token_id: int, logits: torch.Tensor) -> None:
        """A token drawn from ``logits`` (the model's own, before temperature and penalties)."""
        if self.top_n is None:
            self._last_id = token_id
            return
        logprob, top = model_choice(logits, token_id, self.top_n, self._bytes)
        self._add(token_id, logprob, _with_chosen(top, self._bytes(token_id), logprob))

    def emitted(self, text: str) -> None:
        """Text of the choice sent to the client: the tokens it covers are now reported."""
        self._sent_chars += len(text)
        while self._pending and self._pending[0].offset < self._sent_chars:
            self._ready.append(self._pending.pop(0))

    def last_token_ends(self, params: SamplingParams, eos_id: int) -> bool:
        return self._last_id is not None and (self._last_id == eos_id or self._last_id in params.stop_token_ids)

    def take(self, final: bool = False, end_token: bool = False) -> list[TokenLogprob]:
        """Tokens ready to report; ``final``: the choice has ended (``end_token``: on a token
        that is not text, reported last)."""
        if self.top_n is None:
            return []
        ready, self._ready = self._ready, []
        if final:
            if end_token and self._pending:
                ready.append(self._pending[-1])
            self._pending.clear()
        return ready


def _with_chosen(top: list[tuple[bytes, float]], chosen: bytes, logprob: float) -> list[tuple[bytes, float]]:
    """The alternatives, with the chosen token among them (a sampled token may be outside the
    top N: clients such as lm-evaluation-harness compare it with the best)."""
    return top if any(t == chosen for t, _ in top) else top + [(chosen, logprob)]
