"""FLOPs per token and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import torch

from gemma_core.model.config import SLIDING, GemmaConfig

# Dense peaks (FLOP/s) by device-name fragment: bf16 on the tensor cores, and fp32
# without them (PyTorch's default for float32 matrix products: TF32 is off).
_BF16_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
               "L4": 121e12, "4090": 165e12, "3090": 71e12}
_FP32_PEAKS = {"H200": 67e12, "H100": 67e12, "A100": 19.5e12, "L40S": 91.6e12, "A10G": 31.2e12,
               "L4": 30.3e12, "4090": 82.6e12, "3090": 35.6e12}


def training_flops_per_token(cfg: GemmaConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6 per weight used, plus attention scores.

    Attention counts the keys a query actually sees: on average (T + 1) / 2 on
    full layers and at most ``sliding_window`` on sliding ones.
    """
    per_layer_weights = (cfg.emb_dim * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
                         + 3 * cfg.emb_dim * cfg.hidden_dim)
    matmul_weights = cfg.n_layers * per_layer_weights + cfg.emb_dim * cfg.vocab_size  # + LM head
    attention = 0.0
    for kind in cfg.layer_types:
        if kind == SLIDING and cfg.sliding_window < seq_len:
            w = cfg.sliding_window
            # keys seen, averaged over positions: the window fills, then stays full
            avg_keys = (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len
        else:
            avg_keys = (seq_len + 1) / 2
        attention += 2 * 2 * cfg.n_heads * cfg.head_dim * avg_keys  # QK^T and PV
    return 3 * (2 * matmul_weights + attention)


def device_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> float | None:
    """One device's peak for matrix products in ``dtype``; None off CUDA or for an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = _BF16_PEAKS if dtype == torch.bfloat16 else _FP32_PEAKS
    for fragment, peak in peaks.items():
        if fragment in name:
            return peak
    return None


def model_flops_utilisation(tokens_per_s: float, flops_per_token: float, peak_per_device: float | None,
                            devices: int = 1) -> float | None:
    """The share of the devices' peak the model's FLOPs use: ``tokens_per_s`` counts
    every device's tokens, so it is measured against every device's peak."""
    if not peak_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * devices)
