"""``gemma-core export-gguf``: a checkpoint as one GGUF file for llama.cpp, Ollama and LM Studio.

Written with ``gguf``, llama.cpp's own writer (``pip install 'gemma-studio[gguf]'``),
as llama.cpp's ``gemma3`` architecture (src/models/gemma3.cpp). Tensor names come
from our Hugging Face names (interop.py) through gguf's name map. What differs
from our checkpoint, and why:

* every RMSNorm weight is stored plus one: ours (and transformers') scale by
  ``1 + w``, llama.cpp by ``w``;
* the query norm is also multiplied by ``sqrt(d / query_pre_attn_scalar)``: llama.cpp
  scales scores by ``1/sqrt(d)`` with d the head size (``emb_dim // n_heads`` for a
  62-layer model) and cannot be told another scalar; the query norm's output is the
  query, and RoPE is linear, so the factor lands exactly on the scores;
* a tied head is stored once, as ``token_embd`` (llama.cpp reuses it);
* which layers slide is written per layer (``sliding_window_pattern``, one bool each)
  from ``layer_types``: without it llama.cpp assumes Gemma's five sliding to one full.

The file is written atomically: a failure leaves no half-written .gguf.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.model.config import SLIDING, GemmaConfig
from gemma_core.hf.gguf_vocab import gguf_vocab
from gemma_core.hf.interop import state_dict_to_hf
from gemma_core.run.model_dir import CONFIG_FILE, load_model_dir, model_state_for_saving

ARCHITECTURE = "gemma3"
# --type: what each stores, shown by --help.
TENSOR_TYPES = {
    "f32": "every tensor in 32-bit floats: exactly our weights (largest file)",
    "f16": "matrices in 16-bit floats, norms in f32: half the size, differences around 1e-3",
    "bf16": "matrices in bfloat16 (the training precision), norms in f32: half the size",
    "q8_0": "matrices quantised to 8 bits per weight in blocks of 32 (llama.cpp's Q8_0), "
            "norms and matrices whose rows are not a multiple of 32 in f32: about a quarter of f32",
}
Q8_BLOCK = 32


def require_gguf():
    """The ``gguf`` module, or a UserError naming the extra that installs it."""
    try:
        import gguf
    except ImportError:
        raise UserError("the 'gguf' package is needed to write GGUF files; "
                        "install it with: pip install 'gemma-studio[gguf]'") from None
    return gguf


# ------------------------------------------------------------------ the layout
def sliding_window_pattern(layer_types: list[str]) -> list[bool]:
    """llama.cpp's per-layer flags: True where the layer attends within the sliding window."""
    return [kind == SLIDING for kind in layer_types]


def llama_query_scale(cfg: GemmaConfig) -> float:
    """The factor llama.cpp's Gemma 3 multiplies queries by (src/models/gemma3.cpp)."""
    denominator = cfg.emb_dim // cfg.n_heads if cfg.n_layers == 62 else cfg.head_dim
    return 1.0 / math.sqrt(denominator)


def query_norm_factor(cfg: GemmaConfig) -> float:
    """What the query norm is multiplied by so that llama.cpp's scale gives ours."""
    return (cfg.query_pre_attn_scalar ** -0.5) / llama_query_scale(cfg)


def check_representable(cfg: GemmaConfig, where: str) -> None:
    if not cfg.qk_norm:
        raise UserError(f"{where}: field 'qk_norm' is false; llama.cpp's Gemma 3 always normalises "
                        "queries and keys, so this model cannot be written to GGUF")


# ----------------------------------------------------------------- the tensors
def gguf_tensors(state: dict[str, torch.Tensor], cfg: GemmaConfig, gguf) -> dict[str, np.ndarray]:
    """Our tensors under llama.cpp's names, transformed as the module docstring says, in f32."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.n_layers)
    q_factor = query_norm_factor(cfg)
    tensors = {}
    for hf_name, tensor in state_dict_to_hf(state, cfg).items():
        value = tensor.detach().to(torch.float32)
        if hf_name.endswith("norm.weight"):
            value = value + 1.0
        if hf_name.endswith("q_norm.weight"):
            value = value * q_factor
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:  # a tensor gguf's map does not know: a bug, never silently dropped
            raise UserError(f"tensor {hf_name!r} has no llama.cpp name; please report this")
        tensors[name] = value.contiguous().numpy()
    return tensors


def stored_type(array: np.ndarray, tensor_type: str, gguf):
    """The GGML type a tensor is stored in: vectors (norms) always f32, as llama.cpp keeps them."""
    types = gguf.GGMLQuantizationType
    if tensor_type == "f32" or array.ndim < 2:
        return types.F32
    if tensor_type == "q8_0":
        return types.Q8_0 if array.shape[-1] % Q8_BLOCK == 0 else types.F32
    return {"f16": types.F16, "bf16": types.BF16}[tensor_type]


def _file_type(tensor_type: str, gguf) -> int:
    kinds = gguf.LlamaFileType
    return {"f32": kinds.ALL_F32, "f16": kinds.MOSTLY_F16, "bf16": kinds.MOSTLY_BF16,
            "q8_0": kinds.MOSTLY_Q8_0}[tensor_type]


# ------------------------------------------------------------------ the header
def write_hyperparameters(writer, cfg: GemmaConfig, rms_eps: float) -> None:
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_rope_freq_base(cfg.rope_base)  # the full-attention layers'
    pattern = sliding_window_pattern(cfg.layer_types)
    if any(pattern):  # no sliding layer: llama.cpp then builds no sliding-window cache
        writer.add_sliding_window(cfg.sliding_window)
        writer.add_sliding_window_pattern(pattern)
        writer.add_rope_freq_base_swa(cfg.rope_local_base)


# ----------------------------------------------------------------- the export
def _check_writable(folder: Path, output: Path) -> None:
    try:
        probe = folder / f".{output.name}.write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--output {output}: cannot write in {folder} ({err.strerror}); "
                        "choose another --output") from None


def export_gguf(checkpoint: str | Path, output: str | Path, tensor_type: str = "f32",
                overwrite: bool = False) -> Path:
    """Write ``checkpoint`` as one GGUF file; every check runs before anything is written."""
    if tensor_type not in TENSOR_TYPES:
        raise UserError(f"--type {tensor_type!r} is not a GGUF tensor type here; use one of "
                        f"{', '.join(TENSOR_TYPES)}")
    gguf = require_gguf()
    output = atomic.check_output_file(Path(output), overwrite)
    _check_writable(output.parent, output)
    checkpoint = Path(checkpoint)
    model, tokenizer, _ = load_model_dir(checkpoint, "cpu")
    cfg = model.cfg
    where = str(checkpoint / CONFIG_FILE)
    check_representable(cfg, where)
    vocab = gguf_vocab(tokenizer, cfg.vocab_size, where)
    tensors = gguf_tensors(model_state_for_saving(model), cfg, gguf)

    writer = gguf.GGUFWriter(path=None, arch=ARCHITECTURE)
    writer.add_name(checkpoint.resolve().name)
    writer.add_file_type(_file_type(tensor_type, gguf))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_hyperparameters(writer, cfg, model.final_norm.eps)
    vocab.write(writer)
    for name, array in tensors.items():
        kind = stored_type(array, tensor_type, gguf)
        writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    with atomic.atomic_path(output) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return output
