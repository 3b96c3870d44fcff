"""A tokenizer as the files other programs load: ``tokenizers``, transformers, tiktoken.

Every run folder, checkpoint folder and model directory holds them, beside the
seed's ``vocab.json`` (token -> id, which no library can load: it has no merges
and no split pattern):

    tokenizer.json           Hugging Face ``tokenizers`` (an imported tokenizer: the file as imported)
    tokenizer_config.json    transformers' AutoTokenizer: end/beginning-of-text tokens, chat template
    tokenizer.tiktoken       tiktoken's merge ranks, ``base64-token rank`` a line
    tokenizer.tiktoken.json  the rest of ``tiktoken.Encoding``'s arguments: name, split pattern,
                             special tokens, and the ranks file's SHA-256

An imported SentencePiece-style tokenizer (Gemma's own) has no tiktoken form: its
``tokenizer.json`` is the file, and no ``.tiktoken`` pair is written.

Literal ``<|endoftext|>`` in a text is ordinary text in every form, as it is in
ours (tiktoken's ``encode_ordinary``) and in all training data: only the id ends a
document, so no prompt or corpus can inject it. ``tokenizer.json`` keeps the token
in the model's vocabulary instead of among the added tokens matched in text;
transformers, which registers it as a special token, is told
``split_special_tokens``; tiktoken's ``encode`` refuses such text unless told,
and ``encode_ordinary`` reads it as text. A tokenizer with a chat template
(an imported instruction-tuned Gemma) is the exception: its template's markers
must be read as tokens, so transformers gets ``split_special_tokens`` false.

``tokenizer_from_spec`` rebuilds the tokenizer a checkpoint's config recorded, in any of
these forms.

Building ``tokenizer.json`` for a 50k-token vocabulary takes about 0.7 s, so it is
built once when a run starts and copied into each checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.tokenizers.hf_json import (HFTokenizer, hf_tokenizer_from_spec, tiktoken_parts,
                                           tokenizer_json_from_tiktoken)
from gemma_core.tokenizers.tokenizer import (EOS_TOKEN, TRAIN_PATTERN, Tokenizer, from_ranks_file,
                                             load_tokenizer, ranks_text)

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TIKTOKEN_RANKS = "tokenizer.tiktoken"
TIKTOKEN_PARAMS = "tokenizer.tiktoken.json"
TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, TIKTOKEN_RANKS, TIKTOKEN_PARAMS)


def token_text(tokenizer, token_id: int) -> str:
    """A token's text, as transformers names special tokens."""
    try:
        return tokenizer.token_bytes(token_id).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return EOS_TOKEN


def tokenizer_config(tokenizer, context_length: int) -> dict:
    """``tokenizer_config.json`` for transformers' AutoTokenizer."""
    eos_text = token_text(tokenizer, tokenizer.eos_id)
    # A tokenizer with a BOS token (Gemma's) trained every document after it, so
    # transformers must add it too. Ours have none: like GPT-2, the end-of-text
    # token doubles as BOS in the config, and nothing is added.
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos_text,
        "bos_token": token_text(tokenizer, bos),
        "pad_token": eos_text,
        "add_bos_token": tokenizer.bos_id is not None,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        # Special-token text in a prompt is text, as in ours; a chat template's markers are not.
        "split_special_tokens": tokenizer.chat_template is None,
    }
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    return config


def tokenizer_files(tokenizer, context_length: int, where: str = "") -> dict[str, str]:
    """Each file's name and text. An imported ``tokenizer.json`` is not among them: its
    tokenizer's ``save_into`` copies it, as loading needs it."""
    files = {TOKENIZER_CONFIG: json.dumps(tokenizer_config(tokenizer, context_length), indent=2) + "\n"}
    if isinstance(tokenizer, HFTokenizer):
        return files
    files[TOKENIZER_JSON] = tokenizer_json_from_tiktoken(tokenizer, where=where)
    ranks, specials = tiktoken_parts(tokenizer)
    files[TIKTOKEN_RANKS] = ranks_text(ranks)
    files[TIKTOKEN_PARAMS] = json.dumps({
        "name": tokenizer.encoding.name,
        "pat_str": tokenizer.pattern,
        "special_tokens": specials,
        "mergeable_ranks_file": TIKTOKEN_RANKS,
        # tiktoken caches files by path; with the hash it notices a changed one.
        "mergeable_ranks_sha256": hashlib.sha256(files[TIKTOKEN_RANKS].encode("ascii")).hexdigest(),
    }, indent=2, ensure_ascii=False) + "\n"
    return files


def write_tokenizer_files(directory: Path, tokenizer, context_length: int) -> None:
    """Write every file, each atomically."""
    from gemma_core import atomic

    for name, text in tokenizer_files(tokenizer, context_length, where=str(directory)).items():
        atomic.write_text(Path(directory) / name, text)


def copy_tokenizer_files(source: Path, target: Path) -> None:
    """Copy the files ``source`` holds into ``target`` (a checkpoint being built aside), each
    atomically and durably, as the checkpoint's own files are."""
    from gemma_core import atomic

    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (source / name).is_symlink():
            with atomic.atomic_path(target / name) as tmp:
                shutil.copyfile(source / name, tmp)


def tokenizer_from_spec(spec: dict, directory: Path | None = None) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint recorded."""
    kind = spec.get("kind")
    if kind == "file":
        if directory is None:
            raise UserError("tokenizer spec of kind 'file' needs the checkpoint directory")
        path = directory / spec.get("file", "tokenizer.tiktoken")
        return from_ranks_file(path, pattern=spec.get("pattern", TRAIN_PATTERN))
    if kind in ("builtin", "tiktoken") and isinstance(spec.get("name"), str):
        return load_tokenizer(spec["name"])
    if kind == "hf":  # a tokenizer.json that tiktoken cannot express (Gemma's own)
        return hf_tokenizer_from_spec(spec, directory)
    raise UserError(f"{directory or 'config'}: unreadable tokenizer entry {spec!r} in config.json")
