"""Each layer's attention entropy and residual RMS on one fixed prompt, at every evaluation.

The probe prompt is built in and never changes (Hamlet's soliloquy, from the bundled
corpus), so the numbers of two evaluations, or of two runs with the same tokenizer, are of
the same text: a layer whose entropy falls is a layer whose attention sharpens, not a
different sentence. It is not a setting for that reason. It is tokenized with the run's
tokenizer and cut to the model's context (and to ``inspect.MAX_TOKENS``); at a few hundred
tokens it is longer than the small presets' sliding windows, so sliding and full layers
see different keys.

Cost: one forward pass of those tokens without the LM head (``inspect.layer_statistics``),
in eval mode and without gradients, on the main rank only: against an evaluation of
whole validation batches it is small (BENCHMARKS.md, ``python -m bench layer_stats``).
Under FSDP the layers' weights are sharded over the ranks and the probe's explicit
attention path does not gather them; the probe is skipped there (the run says so once).

The validation log keeps them under ``"layers"``: a list of
``{"index", "type", "entropy": [nats per head], "residual_rms"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gemma_core.errors import UserError
from gemma_core.run.events import LayerProbe

if TYPE_CHECKING:
    from gemma_core.model.model import Gemma3Model

PROBE_TEXT = """\
To be, or not to be,--that is the question:--
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune
Or to take arms against a sea of troubles,
And by opposing end them?--To die,--to sleep,--
No more; and by a sleep to say we end
The heartache, and the thousand natural shocks
That flesh is heir to,--'tis a consummation
Devoutly to be wish'd. To die,--to sleep;--
To sleep! perchance to dream:--ay, there's the rub;
For in that sleep of death what dreams may come,
When we have shuffled off this mortal coil,
Must give us pause: there's the respect
That makes calamity of so long life;
For who would bear the whips and scorns of time,
The oppressor's wrong, the proud man's contumely,
The pangs of despis'd love, the law's delay,
The insolence of office, and the spurns
That patient merit of the unworthy takes,
When he himself might his quietus make
With a bare bodkin? who would these fardels bear,
To grunt and sweat under a weary life,
But that the dread of something after death,--
The undiscover'd country, from whose bourn
No traveller returns,--puzzles the will,
And makes us rather bear those ills we have
Than fly to others that we know not of?
"""

LOG_KEY = "layers"  # in a validation-log entry


def probe_token_ids(tokenizer, context_length: int) -> list[int]:
    """The probe prompt as the run's tokenizer reads it, cut to what one pass may take."""
    from gemma_core.inspect import MAX_TOKENS  # torch: not loaded by a reader of logs
    return tokenizer.encode_document(PROBE_TEXT)[:min(context_length, MAX_TOKENS)]


def probe_layers(model: "Gemma3Model", token_ids: list[int]) -> tuple[LayerProbe, ...]:
    """Each layer on ``token_ids``, the model in eval mode and back as it was."""
    from gemma_core.inspect import layer_statistics
    was_training = model.training
    model.eval()
    try:
        rows = layer_statistics(model, token_ids)
    finally:
        model.train(was_training)
    return tuple(LayerProbe(row["index"], row["type"], tuple(row["entropy"]), row["residual_rms"])
                 for row in rows)


def layers_to_log(layers: tuple[LayerProbe, ...]) -> list[dict[str, Any]]:
    return [{"index": layer.index, "type": layer.type, "entropy": list(layer.entropy),
             "residual_rms": layer.residual_rms} for layer in layers]


def layers_from_log(entry: dict, path: Path, line: int) -> tuple[LayerProbe, ...]:
    """A validation-log entry's probe (none in a log written before it was kept)."""
    rows = entry.get(LOG_KEY)
    if rows is None:
        return ()
    try:
        return tuple(_layer(row) for row in rows)
    except (TypeError, ValueError, KeyError):
        raise UserError(f"{path}:{line}: damaged log line: {LOG_KEY!r} is not a list of "
                        "{index, type, entropy, residual_rms}; delete the line or restore the file") from None


def _layer(row: dict) -> LayerProbe:
    index, kind, rms = row["index"], row["type"], row["residual_rms"]
    entropy = tuple(_number(v) for v in row["entropy"])
    if not isinstance(index, int) or isinstance(index, bool) or kind not in ("sliding", "full"):
        raise ValueError(row)
    return LayerProbe(index, kind, entropy, _number(rms))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    return float(value)
