"""``gemma-core export-hf``: a checkpoint as a Hugging Face ``Gemma3ForCausalLM`` directory.

The output loads with ``transformers.AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``: config.json, generation_config.json,
model.safetensors (transformers' names, a tied head left out), tokenizer.json and
tokenizer_config.json, plus tiktoken's pair for a tiktoken tokenizer (see
gemma_core/tokenizers/tokenizer_files.py). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.hf.interop import config_to_hf, state_dict_to_hf
from gemma_core.run.model_dir import load_model_dir, model_state_for_saving
from gemma_core.folder_lock import refuse_if_live
from gemma_core.tokenizers.hf_json import HFTokenizer, TOKENIZER_JSON
from gemma_core.tokenizers.tokenizer_files import tokenizer_files

HF_WEIGHTS = "model.safetensors"


def prepare_output(output: str | Path, overwrite: bool) -> Path:
    """The output directory, created; refuse a non-empty one unless ``overwrite``."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a directory; choose another --output")
    if output.is_dir():
        refuse_if_live(output, "writing a model there")  # --overwrite or not: never a live run's files
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(f"{output}: directory is not empty; choose another --output or pass --overwrite")
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{output}: cannot write there ({err.strerror}); choose another --output") from None
    return output


def export_hf(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``checkpoint`` as a transformers Gemma 3 text model in ``output``."""
    checkpoint = Path(checkpoint)
    model, tokenizer, _ = load_model_dir(checkpoint, "cpu")
    cfg = model.cfg
    if not cfg.qk_norm:
        raise UserError(f"{checkpoint / 'config.json'}: field 'qk_norm' is false; transformers' "
                        "Gemma 3 always normalises queries and keys, so this model cannot be exported")
    # Build (and check) the tokenizer's files before writing anything.
    files = tokenizer_files(tokenizer, cfg.context_length, where=str(checkpoint))
    if isinstance(tokenizer, HFTokenizer):  # an imported tokenizer.json goes out as it came in
        files[TOKENIZER_JSON] = tokenizer.path.read_text(encoding="utf-8")

    output = prepare_output(output, overwrite)
    eos = tokenizer.eos_id
    state = state_dict_to_hf(model_state_for_saving(model), cfg)
    state = {name: tensor.to(torch.float32).contiguous() for name, tensor in state.items()}
    with atomic.atomic_path(output / HF_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})

    for name, text in files.items():
        atomic.write_text(output / name, text)
    # Ours have no BOS token: like GPT-2, the end-of-text token doubles as BOS in the config.
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else eos
    atomic.write_json(output / "generation_config.json", {
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos,
    })
    hf_config = config_to_hf(cfg, eos_token_id=eos, pad_token_id=eos, bos_token_id=bos)
    hf_config["dtype"] = "float32"
    hf_config["use_cache"] = True
    # Config last: a directory with config.json is a complete one.
    atomic.write_text(output / "config.json", json.dumps(hf_config, indent=2) + "\n")
    return output
