"""Shared fixtures. Tests never touch the network: sockets are blocked for all of them."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from gemma_core.data.corpus import bundled_works
from gemma_core.model.config import FULL, SLIDING, GemmaConfig


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise NetworkBlocked("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def tiny_config(**overrides) -> GemmaConfig:
    """A small Gemma 3 with both layer types and a short window, for exactness tests."""
    fields = dict(vocab_size=320, context_length=512, emb_dim=64, n_heads=4, n_layers=3,
                  hidden_dim=96, head_dim=32, n_kv_groups=1, sliding_window=16,
                  layer_types=[SLIDING, FULL, SLIDING], dtype="float32",
                  query_pre_attn_scalar=24, tie_embeddings=False)
    fields.update(overrides)
    return GemmaConfig(**fields)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """About 60 KB of Shakespeare as JSONL (train) and text (validation)."""
    folder = tmp_path_factory.mktemp("corpus")
    works = bundled_works()
    train = folder / "train.jsonl"
    with open(train, "w", encoding="utf-8") as f:
        for work in works[:6]:
            for start in range(0, 10_000, 2_500):
                f.write(json.dumps({"text": work.text[start:start + 2_500]}) + "\n")
    val = folder / "val.txt"
    val.write_text(works[10].text[:12_000], encoding="utf-8")
    return train, val
