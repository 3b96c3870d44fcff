"""Shared fixtures. Tests never touch the network: sockets reach this machine's loopback only."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from gemma_core.data.corpus import bundled_works
from gemma_core.model.config import FULL, SLIDING, GemmaConfig


class NetworkBlocked(RuntimeError):
    pass


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))


@pytest.fixture(autouse=True)
def _studio_settings_kept_apart(tmp_path_factory, monkeypatch):
    """The studio remembers its theme and settings in the user's config folder: each test (and
    the studios it starts in other processes) has one of its own, never the real one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Only this machine's loopback (a run's own server): never anything beyond it."""
    real_connect, real_create = socket.socket.connect, socket.create_connection

    def connect(sock, address):
        if sock.family == socket.AF_UNIX or _loopback(address):
            return real_connect(sock, address)
        raise NetworkBlocked(f"tests must not use the network (tried {address!r})")

    def create_connection(address, *args, **kwargs):
        if _loopback(address):
            return real_create(address, *args, **kwargs)
        raise NetworkBlocked(f"tests must not use the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)


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
