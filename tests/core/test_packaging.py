"""What the package declares is what its code needs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def test_the_declared_torch_floor_has_every_api_the_code_uses():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    floor = next(re.fullmatch(r"torch>=(\d+)\.(\d+)", d) for d in dependencies if d.startswith("torch"))
    # torch.nn.utils.get_total_norm and the public torch.distributed.fsdp.fully_shard
    # arrived in 2.6, torch.optim.Muon (the demo preset's optimiser) in 2.9.
    assert (int(floor.group(1)), int(floor.group(2))) >= (2, 9)
    assert hasattr(torch.nn.utils, "get_total_norm") and hasattr(torch.optim, "Muon")
    from torch.distributed.fsdp import fully_shard  # noqa: F401
