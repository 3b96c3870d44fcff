"""An inspected forward pass (``gemma_core.inspect``) as work on a run's weights: what a
run's ``compute`` runs for the studio's Inspect screen and for POST /api/inspect.

The pass is one piece of work, done where a chat reply's tokens are (between two training
steps on a CPU). A prompt that cannot be inspected (empty, too long) comes back as
``Refused``, so that its caller can say so as the caller's mistake, not the run's failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gemma_core.errors import UserError

# Characters a prompt may have before it is tokenized: a prompt of MAX_TOKENS (512) tokens
# is a few thousand characters; more is refused before any work is done.
MAX_PROMPT_CHARS = 16_384


class Refused:
    """The pass's answer when the prompt is the problem: its one-line reason."""

    def __init__(self, message: str) -> None:
        self.message = message


def inspect_pieces(tokenizer, prompt: str, top_k: int, to_json: bool = False) -> Callable[..., Iterator[Any]]:
    """``pieces_of`` for a run's ``compute``: one piece, the ``Inspection`` (or its JSON shape,
    made on the same thread: rounding the maps is torch work), or ``Refused``."""

    def pieces_of(model, dtype, job) -> Iterator[Any]:
        from gemma_core.inspect import inspect_prompt

        try:
            check_prompt_size(prompt)
            found = inspect_prompt(model, tokenizer, prompt, top_k=top_k, step=job.step)
        except UserError as err:
            yield Refused(str(err))
            return
        yield found.to_json() if to_json else found

    return pieces_of


def check_prompt_size(prompt: str) -> None:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt is {len(prompt):,} characters; inspect takes at most "
                        f"{MAX_PROMPT_CHARS:,} (and 512 tokens)")
