"""Hugging Face ``tokenizer.json`` files: built from our tiktoken ranks, read back, or used as is.

* ``tokenizer_json_from_tiktoken`` returns the text of a byte-level BPE that encodes
  exactly as the tiktoken encoding does (the usual tiktoken -> HF conversion), literal
  ``<|endoftext|>`` text included: that is text, as in ours; ``tokenizer_files`` writes
  it beside every run's and export's other tokenizer files;
* ``ranks_from_tokenizer_json`` recovers tiktoken ranks from such a file, or says
  why it cannot (a SentencePiece-style tokenizer such as Gemma's own);
* ``HFTokenizer`` runs any ``tokenizer.json`` through the ``tokenizers`` library,
  with the interface the rest of gemma_core uses.

``tokenizers`` is a dependency (every run writes a ``tokenizer.json``), imported only
when needed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Iterable

from gemma_core.errors import UserError
from gemma_core.tokenizers.byte_alphabet import bytes_to_unicode, unicode_to_bytes
from gemma_core.tokenizers.tokenizer import EOS_TOKEN, GPT2_PATTERN, Tokenizer

TOKENIZER_JSON = "tokenizer.json"
# A short text touching every branch of the split patterns, for checking a conversion.
PROBE_TEXT = ("Hello, world! It's 2024: 1234567 tokens... \"Quoted\" (parens) don't we'll I'M\n"
              "  indented\tline\r\n\n\nnaïve café — 東京 😀 ǅ Ω ∑x² ' s 3.14159 x=y+1;  \n ")


def require_tokenizers():
    """The ``tokenizers`` module, or a UserError naming the extra that installs it."""
    try:
        import tokenizers
    except ImportError:
        raise UserError("the 'tokenizers' package is needed for Hugging Face tokenizers; "
                        "install it with: pip install 'gemma-studio[hf]'") from None
    return tokenizers


def _spell(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


# ------------------------------------------------------------ tiktoken -> HF
def tiktoken_parts(tokenizer: Tokenizer) -> tuple[dict[bytes, int], dict[str, int]]:
    """The mergeable ranks and special tokens of a tiktoken-based tokenizer."""
    encoding = tokenizer.encoding
    ranks = getattr(encoding, "_mergeable_ranks", None)
    specials = dict(getattr(encoding, "_special_tokens", None) or {EOS_TOKEN: tokenizer.eos_id})
    if ranks is None:  # rebuild from the public interface
        ranks = {}
        for token_id in range(encoding.n_vocab):
            if token_id in specials.values():
                continue
            try:
                ranks[encoding.decode_single_token_bytes(token_id)] = token_id
            except KeyError:
                continue
    return dict(ranks), specials


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges equivalent to tiktoken's ranks.

    tiktoken merges, among adjacent pairs, the one whose concatenation has the lowest
    rank. So every split of a multi-byte token into two tokens is a merge, with the
    priority of the token's rank; ties (several splits of one token) go to the split
    of lower-ranked parts.
    """
    merges = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges.extend((rank, left, right) for left, right in splits)
    merges.sort(key=lambda item: item[0])  # stable: keeps each token's split order
    return [(left, right) for _, left, right in merges]


def build_hf_tokenizer(tokenizer: Tokenizer):
    """A ``tokenizers.Tokenizer`` that encodes exactly as this tiktoken tokenizer."""
    tk = require_tokenizers()
    from tokenizers import Regex, decoders, models, pre_tokenizers

    ranks, specials = tiktoken_parts(tokenizer)
    if len(ranks) < 256 or any(bytes([b]) not in ranks for b in range(256)):
        raise UserError(f"tokenizer {tokenizer.name!r}: not byte-level (some of the 256 bytes "
                        "are not tokens), so it has no tokenizer.json form")
    vocab = {_spell(token): rank for token, rank in ranks.items()}
    merges = [(_spell(a), _spell(b)) for a, b in merges_from_ranks(ranks)]
    # Special tokens go in the model's vocabulary, not among the added tokens the library
    # matches in text: literal "<|endoftext|>" in a text is then text, as in ours
    # (encode_ordinary), while the id still decodes to it. No merge ever makes one.
    vocab.update(specials)
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True, byte_fallback=False)
    hf = tk.Tokenizer(model)
    hf.normalizer = None
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    for text, token_id in specials.items():
        if hf.token_to_id(text) != token_id:
            raise UserError(f"tokenizer {tokenizer.name!r}: special token {text!r} would get id "
                            f"{hf.token_to_id(text)}, not {token_id}; it cannot be exported")
    return hf


def tokenizer_json_from_tiktoken(tokenizer: Tokenizer, where: str = "") -> str:
    """``tokenizer.json`` text, checked as a reader of the text gets it: it encodes mixed
    text and literal special-token text (ordinary text) as ``tokenizer.encode`` does."""
    tk = require_tokenizers()
    text = build_hf_tokenizer(tokenizer).to_str(pretty=False)
    _, specials = tiktoken_parts(tokenizer)
    probe = PROBE_TEXT + "".join(f" {special}x{special}\n" for special in specials)
    check_same_encoding(tk.Tokenizer.from_str(text), tokenizer, probe, where=where)
    return text


def check_same_encoding(hf_tokenizer, tokenizer, text: str = PROBE_TEXT, where: str = "") -> None:
    """Raise if the HF tokenizer does not encode ``text`` as ``tokenizer`` does."""
    theirs = hf_tokenizer.encode(text, add_special_tokens=False).ids
    ours = tokenizer.encode(text)
    if theirs != ours:
        at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        raise UserError(f"{where or 'tokenizer.json'}: converted tokenizer encodes differently from "
                        f"tokenizer {tokenizer.name!r} (first difference at token {at}); "
                        "please report this")


# ------------------------------------------------------------ HF -> tiktoken
def _merge_pair(entry) -> tuple[str, str] | None:
    if isinstance(entry, str):
        parts = entry.split(" ")
        return (parts[0], parts[1]) if len(parts) == 2 else None
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        return entry[0], entry[1]
    return None


def _regex_of(pre) -> str | None:
    """The split pattern of a byte-level pre-tokenizer, or None if it is not one we can mirror."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_PATTERN if pre.get("use_regex", True) and not pre.get("add_prefix_space") else None
    if pre.get("type") != "Sequence":
        return None
    steps = pre.get("pretokenizers") or []
    if len(steps) != 2:
        return None
    split, byte_level = steps
    if (split.get("type") != "Split" or str(split.get("behavior", "")).lower() != "isolated"
            or split.get("invert") or not isinstance(split.get("pattern"), dict)
            or "Regex" not in split["pattern"]):
        return None
    if (byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex", True)
            or byte_level.get("add_prefix_space")):
        return None
    return split["pattern"]["Regex"]


def ranks_from_tokenizer_json(data: dict) -> tuple[dict[bytes, int], str] | str:
    """``(ranks, pattern)`` when the tokenizer is tiktoken-convertible, else the reason it is not.

    Convertible: byte-level BPE with no normalizer, a regex split, ids 0..n-1 for the
    byte-level tokens, merges in the order of their results' ids, and one special
    token ``<|endoftext|>`` at id n (our tiktoken tokenizers' layout), whether an added
    token (GPT-2's file, our exports before it was text) or only in the vocabulary (ours).
    """
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not BPE"
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "BPE with byte fallback or subword affixes (SentencePiece style)"
    if data.get("normalizer"):
        return f"it has a normalizer ({data['normalizer'].get('type')})"
    pattern = _regex_of(data.get("pre_tokenizer"))
    if pattern is None:
        return "its pre-tokenizer is not a regex split followed by ByteLevel"
    if (data.get("decoder") or {}).get("type") != "ByteLevel":
        return "its decoder is not ByteLevel"
    vocab = model.get("vocab") or {}
    specials = {t.get("content"): t.get("id") for t in data.get("added_tokens") or []}
    if EOS_TOKEN in vocab:
        specials.setdefault(EOS_TOKEN, vocab[EOS_TOKEN])
    back = unicode_to_bytes()
    ranks: dict[bytes, int] = {}
    for text, token_id in vocab.items():
        if token_id in specials.values():
            continue
        if any(ch not in back for ch in text):
            return f"vocabulary entry {text!r} is not byte-level"
        ranks[bytes(back[ch] for ch in text)] = token_id
    n = len(ranks)
    if sorted(ranks.values()) != list(range(n)):
        return "its token ids are not 0..n-1"
    if any(bytes([b]) not in ranks for b in range(256)):
        return "some of the 256 bytes are not tokens"
    if specials != {EOS_TOKEN: n}:
        return f"its special tokens are not just {EOS_TOKEN!r} at id {n}"
    last = -1
    for entry in model.get("merges") or []:
        pair = _merge_pair(entry)
        if pair is None:
            return f"unreadable merge {entry!r}"
        joined = pair[0] + pair[1]
        merged = ranks.get(bytes(back[ch] for ch in joined)) if all(ch in back for ch in joined) else None
        if merged is None or merged < last:
            return "its merges do not follow its token ids"
        last = merged
    return ranks, pattern


# ---------------------------------------------------------------- HFTokenizer
class _SpecialsView:
    """The few ``tiktoken.Encoding`` members gemma_core reads for special tokens."""

    def __init__(self, specials: dict[str, int], n_vocab: int, eos_id: int) -> None:
        self._special_tokens = dict(specials)
        self.special_tokens_set = set(specials)
        self.n_vocab = n_vocab
        self.eot_token = eos_id

    def encode_single_token(self, text: str) -> int:
        return self._special_tokens[text]


def _decoder_steps(data: dict) -> list[dict]:
    decoder = data.get("decoder") or {}
    return list(decoder.get("decoders") or []) if decoder.get("type") == "Sequence" else [decoder]


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


DETECT = object()  # HFTokenizer(bos_id=DETECT): take the BOS the file's post-processor adds


class HFTokenizer:
    """A ``tokenizer.json`` run by the ``tokenizers`` library, shaped like ``Tokenizer``.

    ``encode`` adds no special tokens and, like tiktoken's ``encode_ordinary``,
    reads special-token strings in the text as plain text.
    """

    ranks_path = None  # not a tiktoken ranks file

    def __init__(self, path: str | Path, eos_id: int | None = None, eos_token: str | None = None,
                 bos_id: int | None | object = DETECT, chat_template: str | None = None) -> None:
        """``bos_id``: the beginning-of-text id, None for none, or ``DETECT``: the id the
        file's own post-processor puts first (Gemma's adds ``<bos>``)."""
        tk = require_tokenizers()
        self.path = Path(path)
        try:
            raw = self.path.read_text(encoding="utf-8")
            self._data = json.loads(raw)
            self._tok = tk.Tokenizer.from_str(raw)
        except FileNotFoundError:
            raise UserError(f"{self.path}: tokenizer file not found") from None
        except IsADirectoryError:
            raise UserError(f"{self.path}: is a directory, expected a tokenizer.json file") from None
        except Exception as err:  # json, UTF-8 or the tokenizers library (which raises Exception)
            raise UserError(f"{self.path}: not a readable tokenizer.json "
                            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        self._tok.encode_special_tokens = True  # special strings in text are text
        self.name = "hf"
        self.pattern = "tokenizers sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()
        self._n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        specials = {t["content"]: t["id"] for t in self._data.get("added_tokens") or []
                    if t.get("special")}
        if eos_id is None and eos_token is not None:
            eos_id = self._tok.token_to_id(eos_token)
        if eos_id is None:
            for candidate in (EOS_TOKEN, "<eos>", "</s>", "<|end_of_text|>"):
                if self._tok.token_to_id(candidate) is not None:
                    eos_id = self._tok.token_to_id(candidate)
                    break
        if eos_id is None or not 0 <= eos_id < self._n_vocab:
            raise UserError(f"{self.path}: no end-of-text token found; record its id as "
                            "'eos_id' in the tokenizer entry of config.json")
        self._eos_id = int(eos_id)
        if bos_id is DETECT:
            bos_id = self._leading_special(specials)
        if bos_id is not None and not (isinstance(bos_id, int) and 0 <= bos_id < self._n_vocab):
            raise UserError(f"{self.path}: beginning-of-text id {bos_id!r} is not in the vocabulary; "
                            "fix 'bos_id' in the tokenizer entry of config.json")
        self._bos_id = bos_id
        self.encoding = _SpecialsView(specials, self._n_vocab, self._eos_id)
        steps = _decoder_steps(self._data)
        self._byte_level = any(s.get("type") == "ByteLevel" for s in steps)
        self._byte_fallback = bool((self._data.get("model") or {}).get("byte_fallback"))
        self._replacements = [(s["pattern"]["String"], s.get("content", ""))
                              for s in steps if s.get("type") == "Replace"
                              and isinstance(s.get("pattern"), dict) and "String" in s["pattern"]]
        self._replacements += [(s.get("replacement", "\u2581"), " ")
                               for s in steps if s.get("type") == "Metaspace"]
        self._specials_by_id = {i: t for t, i in specials.items()}
        self._bytes_cache: dict[int, bytes] = {}
        self._special_reader = None
        self._chat_template = chat_template if isinstance(chat_template, str) and chat_template else None

    # -------------------------------------------------------------- interface
    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    def _leading_special(self, specials: dict[str, int]) -> int | None:
        """The special token the post-processor puts before every text, if any."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        if len(full) > len(plain) and full[0] in specials.values() and full[1:1 + len(plain)] == plain:
            return full[0]
        return None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_document(self, text: str, special_tokens: bool = False) -> list[int]:
        """A whole document or prompt: BOS first where the tokenizer has one, as Gemma expects.
        ``special_tokens``: special-token text (a chat template's ``<start_of_turn>``) is read
        as those tokens; a BOS the text itself starts with is not doubled."""
        if special_tokens:
            ids = self._with_specials().encode(text, add_special_tokens=False).ids
            if self._bos_id is not None and ids[:1] == [self._bos_id]:
                return ids
        else:
            ids = self.encode(text)
        return ids if self._bos_id is None else [self._bos_id, *ids]

    def _with_specials(self):
        """A second tokenizer that reads special-token text as the tokens (built once)."""
        if self._special_reader is None:
            tk = require_tokenizers()
            self._special_reader = tk.Tokenizer.from_str(self.path.read_text(encoding="utf-8"))
            self._special_reader.encode_special_tokens = False
        return self._special_reader

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template the model was tuned with (an instruction-tuned import), if any."""
        return self._chat_template

    def encode_batch(self, texts: list[str], num_threads: int = 4) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a special token: its text); KeyError for an unused id."""
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        if token_id in self._specials_by_id:
            result = self._specials_by_id[token_id].encode("utf-8")
        else:
            piece = self._tok.id_to_token(token_id)
            if piece is None:
                raise KeyError(token_id)
            result = self._piece_bytes(piece)
        self._bytes_cache[token_id] = result
        return result

    def _piece_bytes(self, piece: str) -> bytes:
        if self._byte_fallback:
            match = _BYTE_TOKEN.fullmatch(piece)
            if match:
                return bytes([int(match.group(1), 16)])
        if self._byte_level:
            back = unicode_to_bytes()
            if all(ch in back for ch in piece):
                return bytes(back[ch] for ch in piece)
        for old, new in self._replacements:
            piece = piece.replace(old, new)
        return piece.encode("utf-8")

    def spec(self) -> dict:
        spec = {"kind": "hf", "file": TOKENIZER_JSON, "eos_id": self._eos_id, "bos_id": self._bos_id,
                "n_vocab": self._n_vocab}
        if self._chat_template is not None:
            spec["chat_template"] = self._chat_template
        return spec

    def save_into(self, directory: Path) -> dict:
        from gemma_core import atomic

        target = Path(directory) / TOKENIZER_JSON
        if not target.exists() or self.path.resolve() != target.resolve():
            with atomic.atomic_path(target) as tmp:
                shutil.copyfile(self.path, tmp)
        return self.spec()


def hf_tokenizer_from_spec(spec: dict, directory: Path | None) -> HFTokenizer:
    """Rebuild an ``HFTokenizer`` from a config.json tokenizer entry of kind "hf"."""
    if directory is None:
        raise UserError("tokenizer spec of kind 'hf' needs the checkpoint directory")
    file = spec.get("file", TOKENIZER_JSON)
    eos_id = spec.get("eos_id")
    # Checkpoints written before BOS was recorded: find it as a fresh import would.
    bos_id = spec["bos_id"] if "bos_id" in spec else DETECT
    return HFTokenizer(Path(directory) / file, eos_id=eos_id if isinstance(eos_id, int) else None,
                       bos_id=bos_id, chat_template=spec.get("chat_template"))
