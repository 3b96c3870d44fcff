"""How the studio gets an inspection (``gemma_core.inspect``) of the weights it shows.

A run training in this process and a finished run opened here have ``compute``: the
inspected forward pass is done as a chat reply is, by the thread that owns the cores
between two training steps, on the shared inference copy of the weights. An attached
studio has ``inspect``: the run's server does the same pass (POST /api/inspect).

``run_inspection`` waits for the pass: call it from a worker thread, never the UI's. It
does no torch computation itself (see ``ChatService.chat`` for why that matters on a CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gemma_core.errors import UserError
from gemma_core.run.handle import RunHandle
from gemma_core.serve.inspect_work import Refused, inspect_pieces

if TYPE_CHECKING:  # torch comes with the first pass: the studio starts without it
    from gemma_core.inspect import Inspection

NOT_HERE = "Inspect needs the studio that runs the training (or gemma-tui open on the finished run)"
NOT_READY = "the model is still being prepared; try again in a moment"
WAIT_S = 900.0  # one pass; on a busy CPU it waits for the training step under way first


def run_inspection(engine: RunHandle, prompt: str, top_k: int = 5) -> Inspection:
    """One inspected pass of ``prompt`` on ``engine``'s current weights; ``UserError`` with a
    line to show when it cannot be done."""
    remote = getattr(engine, "inspect", None)
    if callable(remote):
        return remote(prompt, top_k)
    compute = getattr(engine, "compute", None)
    if not callable(compute):
        raise UserError(NOT_HERE)
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        raise UserError(NOT_READY)
    job = compute(inspect_pieces(tokenizer, prompt, top_k))
    if not job.wait(WAIT_S):
        job.cancel()
        raise UserError(f"the run did not make room for the pass within {WAIT_S:.0f} s")
    pieces = job.take_pieces()
    if job.error:
        raise UserError(job.error)
    if not pieces:
        raise UserError("the pass ended without a result")
    if isinstance(pieces[0], Refused):
        raise UserError(pieces[0].message)
    return pieces[0]
