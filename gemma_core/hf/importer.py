"""``gemma-core import-hf``: a local Hugging Face Gemma 3 text checkpoint as one of ours.

Reads config.json (``Gemma3ForCausalLM`` / ``gemma3_text``, or the text half of a
multimodal ``gemma3`` config) and model.safetensors or a sharded
model.safetensors.index.json. The tokenizer becomes a tiktoken ranks file when
tokenizer.json is a byte-level BPE (such as ``export-hf`` writes); otherwise
tokenizer.json is kept and run by the ``tokenizers`` library (spec kind "hf").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.hf.exporter import prepare_output
from gemma_core.hf.interop import config_from_hf, name_from_hf, name_to_hf
from gemma_core.model.config import GemmaConfig
from gemma_core.model.model import Gemma3Model
from gemma_core.model.weights import stored_tensors
from gemma_core.run.model_dir import CONFIG_FILE, WEIGHTS_FILE, write_config
from gemma_core.tokenizers.hf_json import (DETECT, HFTokenizer, check_same_encoding,
                                           ranks_from_tokenizer_json, require_tokenizers)
from gemma_core.tokenizers.tokenizer import from_ranks_file, load_tokenizer, write_ranks

TEXT_ARCHITECTURES = ("Gemma3ForCausalLM", "Gemma3TextModel")
MULTIMODAL_ARCHITECTURES = ("Gemma3ForConditionalGeneration", "Gemma3Model")
INDEX_FILE = "model.safetensors.index.json"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def read_hf_config(hf_dir: Path) -> tuple[GemmaConfig, dict, bool]:
    """Our config, the text config mapping, and whether the checkpoint is multimodal."""
    if not hf_dir.is_dir():
        raise UserError(f"{hf_dir}: directory not found; give a local Hugging Face model directory")
    path = hf_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; a Hugging Face model directory holds config.json "
                        "and model.safetensors")
    data = _read_json(path)
    model_type = data.get("model_type")
    architectures = data.get("architectures") or []
    multimodal = model_type == "gemma3" or any(a in MULTIMODAL_ARCHITECTURES for a in architectures)
    if multimodal:
        text = data.get("text_config")
        if not isinstance(text, dict):
            raise UserError(f"{path}: multimodal Gemma 3 config without a 'text_config' object")
        text = dict(text)
        # Token ids and the tie flag may sit at the top level of a multimodal config.
        for key in ("tie_word_embeddings", "eos_token_id", "bos_token_id", "pad_token_id"):
            if key not in text and key in data:
                text[key] = data[key]
    elif model_type == "gemma3_text" or any(a in TEXT_ARCHITECTURES for a in architectures):
        text = data
    else:
        raise UserError(f"{path}: model_type {model_type!r} (architectures {architectures}) is not "
                        "Gemma 3; import-hf reads Gemma3ForCausalLM (gemma3_text) checkpoints")
    return config_from_hf(text, source=str(path)), text, multimodal


def _weight_files(hf_dir: Path) -> list[Path]:
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = hf_dir / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index}: no 'weight_map'; restore the index file")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (hf_dir / name).is_file():
                raise UserError(f"{hf_dir / name}: shard listed in {INDEX_FILE} is missing")
        return [hf_dir / name for name in files]
    if any(hf_dir.glob("*.bin")):
        raise UserError(f"{hf_dir}: only PyTorch .bin weights; re-save the model with "
                        "safe_serialization=True to get model.safetensors")
    raise UserError(f"{hf_dir}: no model.safetensors or {INDEX_FILE}")


def _text_name(name: str, multimodal: bool) -> str | None:
    """transformers' text-model name of a tensor, or None for a tensor to skip."""
    if multimodal:
        # transformers 4.5x: language_model.model.*, language_model.lm_head.weight;
        # 5.x: model.language_model.*, lm_head.weight.
        if name.startswith("language_model."):
            return name[len("language_model."):]
        if name.startswith("model.language_model."):
            return "model." + name[len("model.language_model."):]
        if name == "lm_head.weight":
            return name
        return None  # vision tower, projector
    if name.startswith("model.") or name == "lm_head.weight":
        return name
    raise KeyError(name)


def read_hf_weights(hf_dir: Path, cfg: GemmaConfig, multimodal: bool) -> dict[str, torch.Tensor]:
    """Our state dict (a tied head left out), names and shapes checked against ``cfg``."""
    with torch.device("meta"):
        expected = Gemma3Model(cfg).state_dict()
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(hf_dir):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    try:
                        hf_name = _text_name(name, multimodal)
                        if hf_name is None:
                            continue
                        ours = name_from_hf(hf_name)
                    except (KeyError, ValueError):
                        raise UserError(f"{file}: tensor {name!r} is not part of a Gemma 3 text "
                                        "model; the checkpoint does not match its config.json") from None
                    if ours not in expected:
                        raise UserError(f"{file}: tensor {name!r} is unexpected; config.json "
                                        f"declares {cfg.n_layers} layers")
                    tensor = f.get_tensor(name)
                    if tuple(tensor.shape) != tuple(expected[ours].shape):
                        raise UserError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                        f"config.json implies {tuple(expected[ours].shape)}")
                    if not tensor.is_floating_point():
                        raise UserError(f"{file}: tensor {name!r} has dtype {tensor.dtype}, "
                                        "expected floating point")
                    state[ours] = tensor.contiguous()
        except (SafetensorError, OSError) as err:
            raise UserError(f"{file}: unreadable safetensors file ({str(err).splitlines()[0]})") from None
    state, expected = stored_tensors(state, cfg), stored_tensors(expected, cfg)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(f"{hf_dir}: tensor {name_to_hf(missing[0])!r} is missing from the weights")
    return state


def _eos_of(hf_dir: Path, text_config: dict) -> tuple[int | None, str | None]:
    """The end-of-text id (generation_config.json, then config.json) and token text."""
    eos_id = None
    for source in (hf_dir / "generation_config.json", None):
        data = text_config if source is None else (_read_json(source) if source.is_file() else {})
        value = data.get("eos_token_id")
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int):
            eos_id = value
            break
    eos_token = None
    config_path = hf_dir / "tokenizer_config.json"
    if config_path.is_file():
        value = _read_json(config_path).get("eos_token")
        eos_token = value.get("content") if isinstance(value, dict) else value
    return eos_id, eos_token if isinstance(eos_token, str) else None


def _bos_of(hf_dir: Path, text_config: dict, tokenizer) -> int | None | object:
    """The beginning-of-text id the model was trained with, as tokenizer_config.json says.

    ``add_bos_token`` true with a ``bos_token`` (Gemma's own files) names it; false
    means none; where the file says nothing, the tokenizer's post-processor decides.
    """
    config_path = hf_dir / "tokenizer_config.json"
    settings = _read_json(config_path) if config_path.is_file() else {}
    add_bos = settings.get("add_bos_token")
    if add_bos is False:
        return None
    if add_bos is not True:
        return DETECT
    token = settings.get("bos_token")
    token = token.get("content") if isinstance(token, dict) else token
    bos_id = tokenizer._tok.token_to_id(token) if isinstance(token, str) else None
    if bos_id is None:
        bos_id = text_config.get("bos_token_id")
    if not isinstance(bos_id, int):
        raise UserError(f"{config_path}: add_bos_token is true but no bos_token is named; "
                        "add \"bos_token\" to the file")
    return bos_id


def import_tokenizer(hf_dir: Path, output: Path, text_config: dict, override: str | None = None):
    """The tokenizer for the imported checkpoint, its files written into ``output``."""
    if override:
        return load_tokenizer(override)
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{hf_dir}: no tokenizer.json; pass --tokenizer (gpt2, shakespeare-4k "
                        "or a .tiktoken file) to pair the weights with one of ours")

    data = _read_json(path)
    converted = ranks_from_tokenizer_json(data)
    if not isinstance(converted, str):
        ranks, pattern = converted
        target = output / "tokenizer.tiktoken"
        write_ranks(ranks, target)
        tokenizer = from_ranks_file(target, pattern=pattern)
        try:
            tk = require_tokenizers()
        except UserError:
            return tokenizer  # conversion not double-checked without the library
        try:
            check_same_encoding(tk.Tokenizer.from_file(str(path)), tokenizer, where=str(path))
            return tokenizer
        except UserError:
            target.unlink()  # keep the tokenizer.json as it is instead
    eos_id, eos_token = _eos_of(hf_dir, text_config)
    template = _chat_template_of(hf_dir)
    tokenizer = HFTokenizer(path, eos_id=eos_id, eos_token=eos_token, chat_template=template)
    bos_id = _bos_of(hf_dir, text_config, tokenizer)
    if bos_id is not DETECT:
        tokenizer = HFTokenizer(path, eos_id=eos_id, eos_token=eos_token, bos_id=bos_id, chat_template=template)
    return tokenizer


def _chat_template_of(hf_dir: Path) -> str | None:
    """An instruction-tuned model's chat template: chat_template.jinja, or tokenizer_config.json's
    ``chat_template`` (a string, or named templates of which "default" is the one)."""
    file = hf_dir / "chat_template.jinja"
    if file.is_file():
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{file}: cannot read ({err})") from None
    config_path = hf_dir / "tokenizer_config.json"
    template = _read_json(config_path).get("chat_template") if config_path.is_file() else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def import_hf(hf_dir: str | Path, output: str | Path, overwrite: bool = False,
              tokenizer: str | None = None) -> Path:
    """Convert the Hugging Face Gemma 3 checkpoint in ``hf_dir`` into our format at ``output``."""
    hf_dir = Path(hf_dir)
    cfg, text_config, multimodal = read_hf_config(hf_dir)
    state = read_hf_weights(hf_dir, cfg, multimodal)
    output = prepare_output(output, overwrite)
    tok = import_tokenizer(hf_dir, output, text_config, tokenizer)
    if tok.n_vocab > cfg.vocab_size:
        raise UserError(f"{hf_dir}: tokenizer has {tok.n_vocab} tokens but vocab_size is "
                        f"{cfg.vocab_size}; the tokenizer does not belong to these weights")
    with atomic.atomic_path(output / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_config(output, cfg, tok, extra={"imported_from": str(hf_dir.resolve())})
    return output
