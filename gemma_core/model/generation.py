"""Text generation: prefill once, then decode token by token from a KV cache.

``generate_tokens`` yields token ids; ``stream_text`` turns them into text
pieces as soon as they form whole UTF-8 characters, and stops at EOS or at a
user's stop string. The command line and the studio's chat pane both use it.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Callable, Iterator

import torch

from gemma_core.device import autocast
from gemma_core.model.kv_cache import KVCache, StaticKVCache
from gemma_core.model.model import Gemma3Model
from gemma_core.model.sampling import (MAX_SEED, MAX_TEMPERATURE, GenerationStats, SamplingParams,  # noqa: F401
                                       fit_to_context)
from gemma_core.tokenizers.tokenizer import Tokenizer


_TINY = torch.finfo(torch.float32).tiny


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> torch.Tensor:
    """Pick the next token from last-position logits of shape (B, vocab)."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    # Shifted so the best logit is 0 before dividing: however small the temperature, the
    # best token keeps probability 1 and the rest fall to 0 (never inf - inf = NaN). Below
    # float32's smallest normal number the temperature cannot be told from it.
    logits = logits.float()
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / max(params.temperature, _TINY)
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set whose mass reaches top_p. The first token always stays: a
        # top_p too small for float32 (1e-300 is 0 there) must not empty the set.
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        outside[..., 0] = False
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def penalised(logits: torch.Tensor, counts: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits lowered for tokens already generated (``counts`` per vocabulary entry), as
    OpenAI's frequency and presence penalties ask."""
    return (logits.float() - params.frequency_penalty * counts
            - params.presence_penalty * (counts > 0).to(torch.float32))


# Called with each sampled token's id and the logits it was drawn from (the model's own,
# before penalties and temperature): how the API reports log-probabilities.
TokenObserver = Callable[[int, torch.Tensor], None]


def _decode_step(model: Gemma3Model, ids: torch.Tensor, cache: KVCache | StaticKVCache) -> torch.Tensor:
    return model(ids, cache, last_position_only=True)[:, -1]


@functools.lru_cache(maxsize=1)
def _compiled_decode_step():
    """The single-token step, compiled once per process (one graph per cache capacity).

    Every shape is fixed and the position is a tensor, so the compiled code runs
    for every token without recompiling: the ~60 small operations per layer of
    eager decoding become a few fused kernels around the matrix products.
    """
    return torch.compile(_decode_step, dynamic=False)


def _static_capacity(needed: int, context: int) -> int:
    """Powers of two, so prompts of similar lengths share one compiled graph."""
    return min(context, 1 << max(needed - 1, 1).bit_length())


def generate_tokens(model: Gemma3Model, prompt_ids: list[int], params: SamplingParams,
                    eos_id: int | None = None,
                    cancel: threading.Event | None = None,
                    compiled: bool = False,
                    dtype: torch.dtype = torch.float32,
                    bos_id: int | None = None,
                    stats: GenerationStats | None = None,
                    observe: TokenObserver | None = None) -> Iterator[int]:
    """Yield new token ids one at a time (EOS is not yielded; ``observe`` sees it too).

    ``dtype`` is the compute precision (autocast over the weights, as in training).
    ``compiled`` decodes with a torch.compile'd step over a static cache: the first
    call pays the compile, later ones with a similar length reuse it. A prompt too
    long for the context keeps its end, and its ``bos_id`` if it began with one.
    """
    device = model.embed_tokens.weight.device

    def run(step, ids: torch.Tensor, cache) -> torch.Tensor:
        # Inference mode and autocast are entered per call, not around the generator's
        # body: a suspended generator must not leave them on (or off) for its caller.
        with torch.inference_mode(), autocast(device, dtype):
            return step(model, ids, cache)

    was_training = model.training
    model.eval()
    try:
        context = model.cfg.context_length
        budget = max(1, context - params.max_new_tokens)
        prompt_ids = list(prompt_ids)
        given = len(prompt_ids)
        if len(prompt_ids) > budget and bos_id is not None and prompt_ids[0] == bos_id:
            prompt_ids = [bos_id] + prompt_ids[len(prompt_ids) - budget + 1:]
        prompt_ids = prompt_ids[-budget:] or ([eos_id] if eos_id is not None else [0])
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens, stats.finish_reason = len(prompt_ids), "length"
        stats.prompt_cut = max(0, given - len(prompt_ids))
        ends = set(params.stop_token_ids) | ({eos_id} if params.stop_at_eos and eos_id is not None else set())
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        needed = len(prompt_ids) + params.max_new_tokens
        if compiled:
            cache = model.new_static_cache(_static_capacity(needed, context),
                                           dtype=None if dtype == torch.float32 else dtype)
            decode = _compiled_decode_step()
        else:
            cache = model.new_cache(capacity=min(context, needed))
            decode = _decode_step
        # The prompt's length changes every call, so the prefill is never compiled.
        logits = run(_decode_step, torch.tensor([prompt_ids], dtype=torch.long, device=device), cache)
        position = len(prompt_ids)
        counts = None
        if params.frequency_penalty or params.presence_penalty:
            counts = torch.zeros(logits.shape[-1], dtype=torch.float32, device=device)
        for _ in range(params.max_new_tokens):
            if cancel is not None and cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            token = sample_next(logits if counts is None else penalised(logits, counts, params), params, generator)
            token_id = int(token.item())
            if observe is not None:
                observe(token_id, logits[0])
            if counts is not None:
                counts[token_id] += 1
            if token_id in ends:
                stats.finish_reason = "stop"
                return
            stats.completion_tokens += 1
            yield token_id
            if position >= context:
                stats.context_full = True
                return
            try:
                logits = run(decode, token.view(1, 1), cache)
            except Exception as err:
                if decode is _decode_step:
                    raise
                # The compiler failed (no C++ compiler, an unwritable temp folder, ...): the
                # same step runs uncompiled; nothing of the failed compile touched the cache.
                warnings.warn(f"torch.compile failed ({type(err).__name__}); decoding in eager mode",
                              RuntimeWarning, stacklevel=2)
                decode = _decode_step
                logits = run(decode, token.view(1, 1), cache)
            position += 1
    finally:
        model.train(was_training)


class Utf8Stream:
    """Turns token bytes into text, holding back bytes of a half-finished character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pending = b""

    def push(self, token_id: int) -> str:
        self.pending += self.tokenizer.token_bytes(token_id)
        for cut in range(len(self.pending), max(len(self.pending) - 4, -1), -1):
            try:
                text = self.pending[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.pending = self.pending[cut:]
            return text
        # Not UTF-8 even allowing a partial tail: emit with replacement characters.
        text, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return text

    def flush(self) -> str:
        text, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return text


def stream_text(model: Gemma3Model, tokenizer: Tokenizer, prompt: str, params: SamplingParams,
                cancel: threading.Event | None = None, compiled: bool = False,
                dtype: torch.dtype = torch.float32, stats: GenerationStats | None = None,
                special_tokens: bool = False, prompt_ids: list[int] | None = None,
                observe: TokenObserver | None = None) -> Iterator[str]:
    """Yield pieces of the continuation of ``prompt``, stopping at EOS or a stop string.

    The prompt starts with the tokenizer's BOS token where it has one, as every
    document did in training. ``special_tokens``: special-token text in the prompt
    (a chat template's turn markers) is read as those tokens, not as text.
    ``prompt_ids``: the prompt as token ids, used as they are (``prompt`` is then unused).
    """
    stats = stats if stats is not None else GenerationStats()
    if prompt_ids is None:
        prompt_ids = tokenizer.encode_document(prompt, special_tokens=special_tokens)
    decoder = Utf8Stream(tokenizer)
    held = ""  # text that might be the start of a stop string
    longest_stop = max((len(s) for s in params.stop_strings), default=0)
    for token_id in generate_tokens(model, prompt_ids, params, tokenizer.eos_id, cancel, compiled,
                                    dtype=dtype, bos_id=tokenizer.bos_id, stats=stats, observe=observe):
        held += decoder.push(token_id)
        if longest_stop:
            hits = [held.find(s) for s in params.stop_strings if s in held]
            if hits:
                stats.finish_reason = "stop"
                yield held[:min(hits)]
                return
            safe = len(held) - (longest_stop - 1)
            if safe > 0:
                yield held[:safe]
                held = held[safe:]
        elif held:
            yield held
            held = ""
    held += decoder.flush()
    if held:
        yield held
