"""gemma_core: pretrain a Gemma 3 language model on one machine, from Python or the command line.

    from gemma_core import TrainSettings, TrainingEngine
    settings = TrainSettings.for_preset("nano", output_dir="runs/nb", max_steps=200)
    final = TrainingEngine(settings).run()

The path of data through the library:

    text -> tokens       data.documents, data.token_cache   (tokenizers.tokenizer)
    tokens -> windows    data.windows, data.splits
    windows -> batches   data.batches
    batches -> step      train.step                           (model.model)
    step -> events       train.engine                         (run.logs, train.checkpoints)
    events -> snapshot   run.state_store                      -> any client (CLI, studio, server)

The layers, lowest first; each imports only from itself and the layers before it
(tests/core/test_layers.py):

    assets, errors, safe_text, value_types, folder_lock, atomic, device, telemetry
      < tokenizers < model < chat, inspect < data < run < hf < train < serve < api < cli

``model`` is the architecture and generation; ``chat`` answers prompts while training;
``run`` is a run: its events and snapshots, its ``RunHandle``, and its files; ``hf`` is
Hugging Face interop; ``train`` trains (checkpoints included) and starts no server;
``serve`` is a run's HTTP API and its clients; ``api`` is the engine the Python API
gives, which serves its run as ``gemma-core train`` does; ``cli`` is the ``gemma-core``
command. Nothing here imports a UI toolkit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names, imported on first use so that ``import gemma_core`` (and the CLI's
# start) does not pay for torch until something needs it.
_PUBLIC = {
    "TrainSettings": "gemma_core.train.settings",
    "TrainingEngine": "gemma_core.api",
    "TrainingFailed": "gemma_core.train.engine",
    "CommandRefused": "gemma_core.train.engine",
    "RunViewer": "gemma_core.run.viewer",
    "RunSnapshot": "gemma_core.run.events",
    "RunState": "gemma_core.run.events",
    "StepMetrics": "gemma_core.run.events",
    "EvalResult": "gemma_core.run.events",
    "CheckpointSaved": "gemma_core.run.events",
    "RunFinished": "gemma_core.run.events",
    "RunFailed": "gemma_core.run.events",
    "SamplingParams": "gemma_core.model.generation",
    "ChatJob": "gemma_core.chat",
    "GemmaConfig": "gemma_core.model.config",
    "Gemma3Model": "gemma_core.model.model",
    "PRESETS": "gemma_core.model.presets",
    "load_model_dir": "gemma_core.run.model_dir",
    "UserError": "gemma_core.errors",
}

__all__ = [
    "ChatJob",
    "CheckpointSaved",
    "CommandRefused",
    "EvalResult",
    "Gemma3Model",
    "GemmaConfig",
    "PRESETS",
    "RunFailed",
    "RunFinished",
    "RunSnapshot",
    "RunState",
    "RunViewer",
    "SamplingParams",
    "StepMetrics",
    "TrainSettings",
    "TrainingEngine",
    "TrainingFailed",
    "UserError",
    "load_model_dir",
]

if TYPE_CHECKING:  # pragma: no cover
    from gemma_core.chat import ChatJob
    from gemma_core.errors import UserError
    from gemma_core.model.config import GemmaConfig
    from gemma_core.model.generation import SamplingParams
    from gemma_core.model.model import Gemma3Model
    from gemma_core.model.presets import PRESETS
    from gemma_core.run.model_dir import load_model_dir
    from gemma_core.run.viewer import RunViewer
    from gemma_core.api import TrainingEngine
    from gemma_core.train.engine import CommandRefused, TrainingFailed
    from gemma_core.run.events import (CheckpointSaved, EvalResult, RunFailed, RunFinished, RunSnapshot,
                                         RunState, StepMetrics)
    from gemma_core.train.settings import TrainSettings


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gemma_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
