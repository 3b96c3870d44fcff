"""What a reply is asked for and what it did: sampling settings and generation counts.

Plain data, no torch: the run's clients (``gemma-core status``, an attached studio)
name these without paying for torch's import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gemma_core.errors import UserError
from gemma_core.value_types import field_types, type_mismatch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0 means greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    stop_at_eos: bool = True
    stop_token_ids: tuple[int, ...] = ()  # more tokens that end a reply, as EOS does (a chat turn's end)
    # OpenAI's penalties on tokens already generated: each logit is lowered by
    # frequency_penalty times the token's count so far, and presence_penalty once it has appeared.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def validate(self) -> None:
        # Each field's type first: a range check on a value of the wrong type gives wrong
        # advice ("must be 1 or more, got 5" for the text "5").
        for name, hint in field_types(SamplingParams).items():
            problem = type_mismatch(_FLAGS.get(name, name), getattr(self, name), hint)
            if problem:
                raise UserError(problem)
        if self.max_new_tokens < 0:
            raise UserError(f"--max_new_tokens must be 0 or more, got {self.max_new_tokens}")
        if not _is_number(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise UserError(f"--temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}, "
                            f"got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--top_k must be 1 or more, got {self.top_k}")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {self.seed}")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not -MAX_PENALTY <= value <= MAX_PENALTY:
                raise UserError(f"{name} must be a number from {-MAX_PENALTY:g} to {MAX_PENALTY:g}, got {value}")
        for stop in self.stop_strings:
            if not stop:
                raise UserError(f"--stop must be non-empty text, got {stop!r}")


_FLAGS = {name: f"--{name}" for name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")}
MAX_TEMPERATURE = 100.0  # far past uniform sampling; beyond it the softmax only loses precision
MAX_PENALTY = 2.0  # OpenAI's bounds for both penalties
MAX_SEED = 2**32 - 1  # what every random generator used here accepts (TrainSettings: the same)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fit_to_context(prompt_tokens: int, max_new_tokens: int, context: int) -> int:
    """How many new tokens fit after a prompt of ``prompt_tokens`` within ``context``.

    Raises ``UserError`` when the prompt alone fills the context: cutting it
    silently would answer another question than the one asked.
    """
    if prompt_tokens >= context:
        raise UserError(f"the prompt is {prompt_tokens:,} tokens but the model's context is {context:,}; "
                        "shorten the prompt")
    return min(max_new_tokens, context - prompt_tokens)


@dataclass
class GenerationStats:
    """What a generation did, filled in as it runs (the OpenAI API's usage and finish_reason)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop" (EOS or a stop string), "length" or "cancelled"
    prompt_cut: int = 0  # tokens dropped from the prompt's start to leave room for the reply
    context_full: bool = False  # "length" because the context filled up, not max_new_tokens
