"""A checkpoint's tokenizer as llama.cpp's GGUF vocabulary (the ``tokenizer.ggml.*`` keys).

Two forms llama.cpp can run, chosen by the tokenizer:

* byte-level BPE (``tokenizer.ggml.model = "gpt2"``) for our tiktoken tokenizers:
  tokens spelled in GPT-2's byte alphabet, merges, and a named pre-tokenizer. llama.cpp
  knows split patterns only by name, so the name must be one whose regex is ours:
  "gpt-2" for GPT-2's and "llama-bpe" for the GPT-4 pattern our trained tokenizers use
  (llama.cpp's LLAMA3 type, which also takes a whole word that is a token without
  merging, as tiktoken does). Any other pattern is refused.
* SentencePiece (``"llama"``) for a Gemma-style tokenizer.json (BPE with byte fallback,
  spaces written as "▁"): llama.cpp merges by score, so each token scores minus the rank
  of the merge that makes it.

Special tokens are CONTROL tokens, which llama.cpp reads from text only when asked
(parse_special); like our encoder, it reads "<|endoftext|>" in a prompt as text.
Ids the tokenizer leaves unused up to the model's vocabulary size are UNUSED
placeholders, so the embedding keeps its rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gemma_core.errors import UserError
from gemma_core.tokenizers.byte_alphabet import bytes_to_unicode
from gemma_core.tokenizers.tokenizer import GPT2_PATTERN, TRAIN_PATTERN
from gemma_core.tokenizers.hf_json import (HFTokenizer, merges_from_ranks, ranks_from_tokenizer_json,
                                           tiktoken_parts)

# llama.cpp's names for the split patterns it implements, keyed by our patterns
# (src/llama-vocab.cpp: "gpt-2" -> LLAMA_VOCAB_PRE_TYPE_GPT2, "llama-bpe" -> ..._LLAMA3).
PRE_TOKENIZERS = {GPT2_PATTERN: "gpt-2", TRAIN_PATTERN: "llama-bpe"}

# gguf.TokenType's values, named here so this module imports without gguf.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class GGUFVocab:
    """Everything a GGUF file says about its tokenizer."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]
    eos_id: int
    bos_id: int | None
    pre: str | None = None
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    unk_id: int | None = None
    add_space_prefix: bool | None = None

    def write(self, writer) -> None:
        """Add the tokenizer keys to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        writer.add_eos_token_id(self.eos_id)
        # Without BOS, EOS doubles as it (GPT-2's way) and none is added: llama.cpp
        # would otherwise assume id 11 and, for "llama-bpe", add it to every prompt.
        writer.add_bos_token_id(self.bos_id if self.bos_id is not None else self.eos_id)
        writer.add_add_bos_token(self.bos_id is not None)
        writer.add_add_eos_token(False)
        if self.unk_id is not None:
            writer.add_unk_token_id(self.unk_id)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)


def gguf_vocab(tokenizer, vocab_size: int, where: str = "tokenizer") -> GGUFVocab:
    """The GGUF vocabulary of ``tokenizer`` for a model of ``vocab_size`` ids, or a
    UserError saying why llama.cpp cannot run it."""
    if isinstance(tokenizer, HFTokenizer):
        data = tokenizer._data
        convertible = ranks_from_tokenizer_json(data)
        if isinstance(convertible, tuple):  # byte-level BPE in tokenizer.json form
            ranks, pattern = convertible
            specials = {t["content"]: t["id"] for t in data.get("added_tokens") or []}
            return _byte_level(ranks, specials, pattern, tokenizer, vocab_size, where)
        return _sentencepiece(data, tokenizer, vocab_size, where)
    ranks, specials = tiktoken_parts(tokenizer)
    return _byte_level(ranks, specials, tokenizer.pattern, tokenizer, vocab_size, where)


def _placeholder(token_id: int) -> str:
    return f"[PAD{token_id}]"


def _byte_level(ranks: dict[bytes, int], specials: dict[str, int], pattern: str, tokenizer,
                vocab_size: int, where: str) -> GGUFVocab:

    pre = PRE_TOKENIZERS.get(pattern)
    if pre is None:
        raise UserError(f"{where}: the tokenizer splits text with a pattern llama.cpp does not know "
                        f"({pattern[:40]!r}...); only GPT-2's and the pattern of 'gemma-core tokenizer "
                        "train' can be written to GGUF: retrain with one of those tokenizers")
    alphabet = bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    tokens = [_placeholder(i) for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for token, token_id in ranks.items():
        tokens[token_id], types[token_id] = spell(token), NORMAL
    for text, token_id in specials.items():
        tokens[token_id], types[token_id] = text, CONTROL
    merges = [f"{spell(left)} {spell(right)}" for left, right in merges_from_ranks(ranks)]
    return GGUFVocab("gpt2", tokens, types, eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id,
                     pre=pre, merges=merges)


def _space_normalizer(normalizer) -> bool | None:
    """For a Gemma-style normalizer (" " -> "▁", perhaps after prepending "▁"): whether it
    prepends; None for any other normalizer."""
    steps = normalizer.get("normalizers") if normalizer and normalizer.get("type") == "Sequence" else [normalizer]
    prepend = False
    replaced = False
    for step in steps or []:
        if not isinstance(step, dict):
            return None
        if step.get("type") == "Prepend" and step.get("prepend") == _SPACE and not replaced:
            prepend = True
        elif (step.get("type") == "Replace" and step.get("pattern") == {"String": " "}
              and step.get("content") == _SPACE):
            replaced = True
        else:
            return None
    return prepend if replaced else None


def _no_op_after_normalizer(pre) -> bool:
    """No pre-tokenizer, or Gemma's split on " " (a no-op: the normalizer left no spaces)."""
    return pre is None or (isinstance(pre, dict) and pre.get("type") == "Split"
                           and pre.get("pattern") == {"String": " "} and not pre.get("invert"))


def _sentencepiece(data: dict, tokenizer, vocab_size: int, where: str) -> GGUFVocab:
    model = data.get("model") or {}
    prepend = _space_normalizer(data.get("normalizer"))
    if (model.get("type") != "BPE" or not model.get("byte_fallback") or prepend is None
            or not _no_op_after_normalizer(data.get("pre_tokenizer"))):
        raise UserError(f"{where}: tokenizer.json is neither byte-level BPE nor SentencePiece-style BPE "
                        "(byte fallback, spaces as '\u2581'), the two forms llama.cpp runs; it cannot "
                        "be written to GGUF")
    vocab: dict[str, int] = model.get("vocab") or {}
    merge_rank: dict[str, int] = {}
    for rank, entry in enumerate(model.get("merges") or []):
        left, right = entry.split(" ", 1) if isinstance(entry, str) else entry
        merge_rank.setdefault(left + right, rank)
    lowest = -float(len(merge_rank) + 1)  # for tokens no merge makes: chosen last

    tokens = [_placeholder(i) for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    scores = [lowest] * vocab_size
    for piece, token_id in vocab.items():
        tokens[token_id] = piece
        types[token_id] = BYTE if _BYTE_PIECE.fullmatch(piece) else NORMAL
        if piece in merge_rank:
            scores[token_id] = -float(merge_rank[piece])
    for added in data.get("added_tokens") or []:
        token_id = added["id"]
        tokens[token_id] = added["content"]
        types[token_id] = CONTROL if added.get("special") else USER_DEFINED
    unk_id = vocab.get(model.get("unk_token")) if model.get("unk_token") else None
    if unk_id is not None:
        types[unk_id] = UNKNOWN
    return GGUFVocab("llama", tokens, types, eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id,
                     scores=scores, unk_id=unk_id, add_space_prefix=prepend)

