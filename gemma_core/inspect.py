"""Look inside one forward pass: attention maps, entropies, the residual stream, the logit lens.

``inspect_prompt(model, tokenizer, prompt)`` runs the prompt through the model once and
returns an ``Inspection``: per layer the attention weights of every head, each head's
attention entropy, the residual stream's RMS after the block and the logit lens (the
final norm and LM head applied to that layer's output); then the model's own next-token
distribution at the last position and each prompt token's surprisal.

The pass is the model's own (``Gemma3Model.hidden_states``, the same embedding, norms,
projections, RoPE tables and MLPs) except inside attention, where the weights are
computed explicitly (scores, the sliding or causal mask, a float32 softmax) so that they
can be kept. Whichever kernel the model trains with (``eager``, ``sdpa``, ``flex``), this
computes the same logits as ``model(ids)``: tests/core/test_inspect.py holds it to that.

Units: entropies in nats, surprisal in bits. ``layer_statistics`` is the cheap part alone
(per-layer entropy and residual RMS, nothing kept), for logging during training.
The model is read, never changed; call it on a copy that nothing is training
(``chat.InferenceCopy`` gives one for a live run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gemma_core.errors import UserError
from gemma_core.model.attention import visibility_mask
from gemma_core.model.config import SLIDING
from gemma_core.model.model import DecoderLayer, Gemma3Model
from gemma_core.safe_text import require_utf8

# Attention maps take layers x heads x T x T floats (and four times that as JSON text):
# 512 tokens are 18 MB of them for Gemma 3 270M, a longer prompt is more than anyone reads.
MAX_TOKENS = 512
MAX_TOP_K = 50
JSON_DECIMALS = 6  # attention weights in JSON: enough to read any map, a third of the text


@dataclass(frozen=True)
class Prediction:
    """One candidate next token: its id, its text and its probability."""

    token_id: int
    token: str
    prob: float

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "prob": self.prob}


@dataclass
class LayerInspection:
    index: int
    type: str  # "sliding" or "full"
    window: int | None  # keys a sliding layer's query sees, its own included; None: all before it
    attention: torch.Tensor  # (heads, T, T) float32: row i is query i's weights over keys 0..T-1
    entropy: torch.Tensor  # (heads,) nats: each row's entropy, averaged over the T queries
    residual_rms: float  # the residual stream after this block: RMS over features, mean over positions
    lens: list[list[Prediction]]  # per position: the top K next tokens this layer's output points to


@dataclass
class Inspection:
    step: int  # training step of the weights (0 when unknown)
    token_ids: list[int]
    tokens: list[str]  # each prompt token's text (its bytes, undecodable ones as U+FFFD)
    layers: list[LayerInspection]
    logits: torch.Tensor  # (T, vocab) float32: the model's own output at every position
    next: list[Prediction]  # top K of the distribution after the last token
    surprisal: list[float | None]  # bits: -log2 p(token i | tokens before it); None for token 0

    @property
    def top_k(self) -> int:
        return len(self.next)

    def to_json(self, top_k: int | None = None) -> dict[str, Any]:
        """The documented JSON shape (README, "Look inside"), with at most ``top_k`` candidates
        per position (default: all that were computed). Attention weights are rounded to
        ``JSON_DECIMALS`` places; every other number is as computed."""
        k = self.top_k if top_k is None else top_k
        if not 1 <= k <= self.top_k:
            raise ValueError(f"top_k must be from 1 to {self.top_k} (the K inspected), got {k}")
        return {
            "step": self.step,
            "tokens": list(self.tokens),
            "layers": [{
                "index": layer.index, "type": layer.type, "window": layer.window,
                "attention": _rounded(layer.attention),
                "entropy": layer.entropy.tolist(),
                "residual_rms": layer.residual_rms,
                "lens": [[p.to_json() for p in position[:k]] for position in layer.lens],
            } for layer in self.layers],
            "next": [p.to_json() for p in self.next[:k]],
            "surprisal": list(self.surprisal),
        }


# ------------------------------------------------------------------ entry points
def inspect_prompt(model: Gemma3Model, tokenizer, prompt: str, *, top_k: int = 5, step: int = 0,
                   what: str = "the prompt") -> Inspection:
    """Encode ``prompt`` as a document (after BOS where the tokenizer has one) and inspect it.

    ``what`` names the prompt in errors (the command line says ``--prompt``)."""
    if not prompt:
        raise UserError(f"{what} is empty; give some text to inspect")
    require_utf8(prompt, what)
    return inspect_tokens(model, tokenizer, tokenizer.encode_document(prompt), top_k=top_k, step=step,
                          what=what)


def inspect_tokens(model: Gemma3Model, tokenizer, token_ids: list[int], *, top_k: int = 5,
                   step: int = 0, what: str = "the prompt") -> Inspection:
    """One inspected forward pass over ``token_ids`` (at most ``MAX_TOKENS`` of them)."""
    check_length(len(token_ids), model.cfg.context_length, what)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")
    top_k = min(top_k, model.cfg.vocab_size)
    text = _token_text(tokenizer)
    ids = torch.tensor([token_ids], dtype=torch.long, device=model.embed_tokens.weight.device)
    layers: list[LayerInspection] = []

    def record(layer: DecoderLayer, index: int, residual: torch.Tensor, probs: torch.Tensor) -> None:
        lens = _predictions(torch.softmax(_head(model, residual[0]).float(), dim=-1), top_k, text)
        layers.append(LayerInspection(
            index=index, type=_kind(layer), window=layer.attn.window,
            attention=probs[0].float().cpu(), entropy=attention_entropy(probs[0]).cpu(),
            residual_rms=residual_rms(residual[0]), lens=lens))

    with torch.no_grad():  # not inference_mode: the tensors returned stay ordinary ones
        hidden = _inspected_pass(model, ids, record)
        logits = _head(model, hidden[0]).float()
        probs = torch.softmax(logits, dim=-1)
        return Inspection(
            step=step, token_ids=list(token_ids), tokens=[text(i) for i in token_ids], layers=layers,
            logits=logits.cpu(), next=_predictions(probs[-1:], top_k, text)[0],
            surprisal=surprisal_bits(logits, ids[0]))


def layer_statistics(model: Gemma3Model, token_ids: list[int] | torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: ``index``, ``type`` (sliding or full), ``entropy`` (nats, each head's, averaged
    over the queries), ``entropy_mean`` (over heads and queries) and ``residual_rms``, for a fixed
    probe prompt at each evaluation. It costs one forward pass of that prompt without the LM
    head, and keeps nothing."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=model.embed_tokens.weight.device).view(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("layer_statistics needs at least one token")
    rows: list[dict[str, Any]] = []

    def record(layer: DecoderLayer, index: int, residual: torch.Tensor, probs: torch.Tensor) -> None:
        entropy = attention_entropy(probs[0])
        rows.append({"index": index, "type": _kind(layer), "entropy": entropy.tolist(),
                     "entropy_mean": float(entropy.mean()), "residual_rms": residual_rms(residual[0])})

    with torch.no_grad():
        _inspected_pass(model, ids, record)
    return rows


def check_length(n_tokens: int, context_length: int, what: str = "the prompt") -> None:
    """Refuse an empty prompt, one past the model's context and one past ``MAX_TOKENS``."""
    if n_tokens == 0:
        raise UserError(f"{what} is empty after tokenizing; give some text to inspect")
    limit = min(MAX_TOKENS, context_length)
    if n_tokens > limit:
        why = (f"the model's context is {context_length:,} tokens" if context_length <= MAX_TOKENS else
               f"inspect shows at most {MAX_TOKENS} (its attention maps grow as tokens squared)")
        raise UserError(f"{what} is {n_tokens:,} tokens; {why}: give a prompt of at most {limit:,} tokens")


# ---------------------------------------------------------------- the measures
def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(heads, T, T) weights -> (heads,): each row's entropy in nats, averaged over the rows."""
    return torch.special.entr(probs.float()).sum(-1).mean(-1)


def residual_rms(residual: torch.Tensor) -> float:
    """(T, features) -> the root mean square over features, averaged over positions."""
    return float(residual.float().pow(2).mean(-1).sqrt().mean())


def surprisal_bits(logits: torch.Tensor, ids: torch.Tensor) -> list[float | None]:
    """-log2 p(token i | tokens before it) for each token; None for the first (nothing predicts it)."""
    log_probs = torch.log_softmax(logits[:-1].float(), dim=-1)
    nats = -log_probs.gather(-1, ids[1:, None]).squeeze(-1)
    return [None, *(nats / math.log(2)).tolist()]


# ---------------------------------------------------------------- the pass
Record = Callable[[DecoderLayer, int, torch.Tensor, torch.Tensor], None]


def _inspected_pass(model: Gemma3Model, ids: torch.Tensor, record: Record) -> torch.Tensor:
    """The model's own ``hidden_states``, each layer run by ``_inspected_layer``, which hands
    ``record`` the layer's output and attention weights."""
    layers = [_Inspected(layer, i, record) for i, layer in enumerate(model.layers)]
    return model.hidden_states(ids, layers=layers)


class _Inspected:
    """Stands in for a decoder layer in ``hidden_states``' loop (same call, same result)."""

    def __init__(self, layer: DecoderLayer, index: int, record: Record) -> None:
        self.layer, self.index, self.record = layer, index, record

    def __call__(self, x: torch.Tensor, start: int, cache=None) -> torch.Tensor:
        out, probs = _inspected_layer(self.layer, x)
        self.record(self.layer, self.index, out, probs)
        return out


def _inspected_layer(layer: DecoderLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``DecoderLayer.forward`` (no cache), its attention weights computed and returned too."""
    attn = layer.attn
    batch, length, _ = x.shape
    h = layer.input_norm(x)
    q = attn.q_proj(h).view(batch, length, attn.n_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(batch, length, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(batch, length, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
    q, k = attn.rope(attn.q_norm(q), 0), attn.rope(attn.k_norm(k), 0)
    # Query head h reads key/value head h // group, as every kernel groups them.
    group = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    probs = attention_weights(q, k, attn.scale, attn.window)
    out = probs.to(v.dtype) @ v
    attended = attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
    x = x + layer.post_attention_norm(attended)
    x = x + layer.post_feedforward_norm(layer.mlp(layer.pre_feedforward_norm(x)))
    return x, probs


def attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float, window: int | None) -> torch.Tensor:
    """q, k: (B, H, T, D) -> (B, H, T, T) float32 softmax weights under the causal (and, with
    ``window``, sliding) mask: exactly zero on every key a query does not see."""
    length = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) * scale
    visible = visibility_mask(length, length, 0, window, q.device)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1, dtype=torch.float32)


def _head(model: Gemma3Model, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from a residual stream, as ``Gemma3Model.forward`` makes them (Gemma 3 has no
    final logit softcapping)."""
    return model.lm_head(model.final_norm(hidden))


def _kind(layer: DecoderLayer) -> str:
    return "sliding" if layer.layer_type == SLIDING else "full"


def _predictions(probs: torch.Tensor, top_k: int, text: Callable[[int], str]) -> list[list[Prediction]]:
    """(T, vocab) probabilities -> per position, the ``top_k`` likeliest tokens, likeliest first."""
    values, indices = probs.topk(top_k, dim=-1)
    return [[Prediction(i, text(i), p) for i, p in zip(row_ids, row_probs)]
            for row_ids, row_probs in zip(indices.tolist(), values.tolist())]


def _token_text(tokenizer) -> Callable[[int], str]:
    """Token id -> its text: the token's bytes, undecodable ones shown as U+FFFD. An id the
    tokenizer lacks (a model vocabulary larger than its tokenizer's) reads ``<id N>``."""
    cache: dict[int, str] = {}

    def text(token_id: int) -> str:
        if token_id not in cache:
            try:
                cache[token_id] = tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")
            except (KeyError, ValueError, IndexError):
                cache[token_id] = f"<id {token_id}>"
        return cache[token_id]

    return text


def _rounded(weights: torch.Tensor) -> list:
    """Weights rounded in float64, so that JSON writes 0.123457, not 0.12345699965953827."""
    scale = 10.0 ** JSON_DECIMALS
    return (torch.round(weights.double() * scale) / scale).tolist()
