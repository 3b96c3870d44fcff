"""How sure the model was of each token of a reply, and what else it weighed there.

A ``TokenChoice`` is one generated token with its log-probability and its likeliest
alternatives, all under the model's own distribution: the softmax of its logits at that
position, before penalties, temperature, top-k and top-p reshape them for sampling. That is
what the OpenAI API's ``logprobs`` report here too (``serve/completion_work.py``), so a shade
says how sure the model was, not how the sampler's settings narrowed its choice: greedy
decoding shows the same numbers as sampling at 1.5.

Three paths make the same data:

* ``ChoicesFromLogits.observe`` (a ``TokenObserver`` of ``generate_tokens``) in the process
  that decodes: one ``log_softmax`` and one ``topk`` on logits already computed;
* ``choices_from_logprobs`` from the OpenAI chat shape a run's server sends
  (``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``);
* both through ``ChoiceBuilder``, which gives each token the characters of the reply it
  completes, so a client can find it in the text.

Plain data, torch imported only where logits are read: an attached studio uses these
without torch.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

TOP_ALTERNATIVES = 5  # what the studio asks for: enough to see what the model hesitated between
MAX_ALTERNATIVES = 20  # as the API's top_logprobs
# The log-probability given for a token the model gives no chance at all (as the API does):
# JSON has no -inf.
NO_CHANCE = -9999.0


@dataclass(frozen=True)
class Alternative:
    """A token the model weighed at a position, and its log-probability there."""

    token_bytes: bytes
    logprob: float

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)

    @property
    def name(self) -> str:
        return token_name(self.token_bytes)


@dataclass(frozen=True)
class TokenChoice:
    """A generated token: the text it completes, how likely the model found it, and the
    likeliest tokens there (likeliest first; the chosen one always among them, last if it
    was not among the likeliest)."""

    text: str  # the reply's characters this token completes ("" for part of a character)
    token_bytes: bytes
    logprob: float
    alternatives: tuple[Alternative, ...]

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)

    @property
    def name(self) -> str:
        return token_name(self.token_bytes)


def token_name(token: bytes) -> str:
    """A token as logprobs name it: its text, or its bytes spelled out where they are not
    whole UTF-8 characters (as vLLM does)."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in token)


def finite(logprob: float) -> float:
    return max(NO_CHANCE, logprob)


def token_bytes_of(tokenizer, token_id: int) -> bytes:
    """A token's bytes; none for an id past the tokenizer's vocabulary (a model's vocabulary
    may be padded past its tokenizer's: those ids stand for nothing)."""
    return tokenizer.token_bytes(token_id) if 0 <= token_id < tokenizer.n_vocab else b""


def model_choice(logits, token_id: int, top_n: int,
                 bytes_of: Callable[[int], bytes]) -> tuple[float, list[tuple[bytes, float]]]:
    """The model's own log-probability of ``token_id`` at ``logits``, and its ``top_n``
    likeliest tokens there as (bytes, log-probability), likeliest first: one ``log_softmax``
    and one ``topk`` on logits already computed."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = torch.topk(logprobs, min(top_n, logprobs.shape[-1]))
    likeliest = [(bytes_of(t), finite(v)) for t, v in zip(ids.tolist(), values.tolist())]
    return finite(float(logprobs[token_id])), likeliest


class ChoiceBuilder:
    """Makes a reply's ``TokenChoice``s in order, each with the characters it completes: a
    character split over two tokens belongs to the second."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def choice(self, token: bytes, logprob: float, likeliest: Iterable[Alternative]) -> TokenChoice:
        alternatives = tuple(likeliest)
        if not any(a.token_bytes == token for a in alternatives):
            alternatives += (Alternative(token, logprob),)  # a sampled token outside the likeliest
        return TokenChoice(self._decoder.decode(token), token, logprob, alternatives)


class ChoicesFromLogits:
    """A ``TokenObserver``: each generated token's choice from the logits it was drawn from,
    handed to ``record``. The token that ends the reply (EOS, a stop token) is not text and
    is left out."""

    def __init__(self, tokenizer, top_n: int, ends: Iterable[int],
                 record: Callable[[TokenChoice], None]) -> None:
        self.tokenizer, self.top_n = tokenizer, top_n
        self.ends = frozenset(ends)
        self.record = record
        self.builder = ChoiceBuilder()

    def _bytes(self, token_id: int) -> bytes:
        return token_bytes_of(self.tokenizer, token_id)

    def observe(self, token_id: int, logits) -> None:
        if token_id in self.ends:
            return
        logprob, likeliest = model_choice(logits, token_id, self.top_n, self._bytes)
        self.record(self.builder.choice(self._bytes(token_id), logprob,
                                        [Alternative(t, lp) for t, lp in likeliest]))


def ends_of(params, eos_id: int | None) -> set[int]:
    """The tokens that end a reply rather than add to it, as ``generate_tokens`` has them."""
    return set(params.stop_token_ids) | ({eos_id} if params.stop_at_eos and eos_id is not None else set())


# ------------------------------------------------------------ the API's shape
def chat_logprobs_entry(token: bytes, logprob: float, top: Iterable[tuple[bytes, float]], top_n: int) -> dict:
    """A token as one entry of a chat completion's ``logprobs.content``: exactly ``top_n``
    alternatives (the chosen token among them only if it is among the likeliest)."""
    def entry(token: bytes, logprob: float) -> dict:
        return {"token": token_name(token), "logprob": logprob, "bytes": list(token)}

    return entry(token, logprob) | {"top_logprobs": [entry(b, lp) for b, lp in list(top)[:top_n]]}


def logprobs_entry(choice: TokenChoice, top_n: int) -> dict:
    """``choice`` as one entry of a chat completion's ``logprobs.content``."""
    return chat_logprobs_entry(choice.token_bytes, choice.logprob,
                               ((a.token_bytes, a.logprob) for a in choice.alternatives), top_n)


def choices_from_logprobs(logprobs: Any, builder: ChoiceBuilder) -> list[TokenChoice] | None:
    """A chat completion's ``logprobs`` (``{"content": [entry, ...]}``) as ``TokenChoice``s;
    None when it is not that shape (a server's answer is not trusted to be)."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    choices = []
    for entry in content:
        token, logprob = _token_of(entry)
        top = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if token is None or not isinstance(top, list):
            return None
        likeliest = [_token_of(item) for item in top]
        if any(t is None for t, _ in likeliest):
            return None
        choices.append(builder.choice(token, logprob, [Alternative(t, lp) for t, lp in likeliest]))
    return choices


def _token_of(entry: Any) -> tuple[bytes | None, float]:
    """(bytes, logprob) of an entry; (None, 0) when it is not one."""
    if not isinstance(entry, dict):
        return None, 0.0
    raw, logprob = entry.get("bytes"), entry.get("logprob")
    if (not isinstance(raw, list) or not all(type(b) is int and 0 <= b < 256 for b in raw)
            or isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or not math.isfinite(logprob)
            or logprob > 0):
        return None, 0.0
    return bytes(raw), finite(float(logprob))
