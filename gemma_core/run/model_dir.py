"""Model directories: ``config.json`` + ``model.safetensors`` + the tokenizer's files.

``config.json`` keeps the seed's flat model keys at the top level, so the seed's
readers still work, and adds ``tokenizer`` (how to rebuild the tokenizer) and,
for trained models, ``training`` (the arguments of the run).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gemma_core import atomic
from gemma_core.device import available_bytes
from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.model import Gemma3Model
from gemma_core.model.weights import full_tensor, stored_tensors
from gemma_core.tokenizers.tokenizer import Tokenizer
from gemma_core.tokenizers.tokenizer_files import tokenizer_from_spec, write_tokenizer_files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def model_state_for_saving(model: Gemma3Model) -> dict[str, torch.Tensor]:
    """Whole, contiguous CPU tensors; a tied head is stored once, as the embedding.

    Under FSDP2 this gathers each sharded tensor, so every rank must call it.
    """
    state = stored_tensors(model.state_dict(), model.cfg)
    return {name: full_tensor(tensor).detach().to("cpu").contiguous() for name, tensor in state.items()}


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write ``model_state_for_saving``'s tensors atomically."""
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def save_model_dir(directory: str | Path, model: Gemma3Model, tokenizer: Tokenizer,
                   extra: dict | None = None) -> None:
    """Write a loadable model directory (weights first, config last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS_FILE, model_state_for_saving(model))
    write_config(directory, model.cfg, tokenizer, extra)


def write_config(directory: Path, cfg: GemmaConfig, tokenizer: Tokenizer,
                 extra: dict | None = None) -> None:
    """``config.json``, after the tokenizer: the files loading needs, then the ones other
    programs read (``tokenizer.json``, ``tokenizer_config.json``, tiktoken's pair)."""
    payload = cfg.to_dict()
    payload["tokenizer"] = tokenizer.save_into(directory)
    write_tokenizer_files(directory, tokenizer, cfg.context_length)
    payload.update(extra or {})
    atomic.write_json(directory / CONFIG_FILE, payload)


def read_config(directory: str | Path) -> tuple[GemmaConfig, dict]:
    """The model config and the whole ``config.json`` mapping."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: is a file, not a checkpoint folder (one holding config.json and "
                        "model.safetensors); give the folder")
    if not directory.is_dir():
        raise UserError(f"{directory}: checkpoint directory not found")
    path = directory / CONFIG_FILE
    _require_regular_file(path, "a checkpoint directory holds config.json and model.safetensors")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return GemmaConfig.from_dict(data, source=str(path)), data


def _require_regular_file(path: Path, what: str) -> None:
    """A missing file, and a folder, device or pipe where a file belongs, each said as such."""
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: missing; {what}")
    if not path.is_file() or _is_device_link(path):
        raise UserError(f"{path}: is not a regular file; {what}")


def _is_device_link(path: Path) -> bool:
    import stat

    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True


def load_tokenizer_of(directory: str | Path, data: dict, cfg: GemmaConfig) -> Tokenizer:
    directory = Path(directory)
    spec = data.get("tokenizer")
    if spec is None:  # the seed's config.json: GPT-2 through tiktoken
        spec = {"kind": "builtin", "name": data.get("tiktoken_encoder_name", "gpt2")}
    if not isinstance(spec, dict):
        raise UserError(f"{directory / CONFIG_FILE}: 'tokenizer' must be an object such as "
                        f'{{"kind": "builtin", "name": "gpt2"}}, got {spec!r}')
    tokenizer = tokenizer_from_spec(spec, directory)
    if tokenizer.n_vocab > cfg.vocab_size:
        raise UserError(
            f"{directory / CONFIG_FILE}: tokenizer has {tokenizer.n_vocab} tokens but the model's "
            f"vocab_size is {cfg.vocab_size}; use the tokenizer the model was trained with")
    return tokenizer


def load_weights(path: Path, model: Gemma3Model) -> None:
    """Load safetensors weights, checking names, shapes, dtypes and that every value is finite."""
    _require_regular_file(path, "the model's weights file is needed (a run writes it at its first evaluation "
                                "or checkpoint)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable safetensors file ({str(err).splitlines()[0]}); "
                        "it may be truncated or corrupted: restore it or retrain") from None
    expected = stored_tensors(model.state_dict(), model.cfg)
    state = stored_tensors(state, model.cfg)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        what = "missing" if missing else "unexpected"
        raise UserError(f"{path}: tensor {name!r} is {what}; the weights do not match config.json")
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape:
            raise UserError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                            f"config.json implies {tuple(want.shape)}")
        if not tensor.is_floating_point():
            raise UserError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: tensor {name!r} holds NaN or infinite values; the weights are "
                            "damaged: restore them or retrain")
    with torch.no_grad():
        for name, tensor in state.items():
            expected[name].copy_(tensor)


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[Gemma3Model, Tokenizer, dict]:
    """Model (fp32, eval mode), tokenizer and the whole config mapping."""
    directory = Path(directory)
    cfg, data = read_config(directory)
    tokenizer = load_tokenizer_of(directory, data, cfg)
    _check_room_to_load(cfg, torch.device(device), str(directory / CONFIG_FILE))
    with torch.device(device):
        model = Gemma3Model(cfg)
    load_weights(directory / WEIGHTS_FILE, model)
    model.eval()
    return model, tokenizer, data


def _check_room_to_load(cfg: GemmaConfig, device: torch.device, where: str) -> None:
    """Refuse, before allocating anything, a model whose weights cannot fit: float32 weights
    plus a copy of them as read from the file."""
    need = 8 * cfg.num_parameters()
    free = available_bytes(device)
    if free is not None and need > free:
        raise UserError(f"{where}: the model has {cfg.num_parameters():,} parameters; loading it needs "
                        f"about {need / 2**30:,.1f} GiB but {free / 2**30:,.1f} GiB is free on {device}")
