"""The Python API's engine: a training run that serves its API, as ``gemma-core train`` does.

``gemma_core.TrainingEngine`` is this class. The engine in ``train.engine`` starts no server
(training does not depend on serving); this one adds the run's HTTP API as a companion
unless ``settings.serve`` is False, so a notebook's run can be attached to and steered
from anywhere, like one started from the command line.
"""

from __future__ import annotations

from gemma_core.serve.training import serve_training
from gemma_core.train import engine
from gemma_core.train.settings import TrainSettings


class TrainingEngine(engine.TrainingEngine):
    """A ``train.engine.TrainingEngine`` that serves its run's API while it trains, unless
    ``settings.serve`` is False."""

    def __init__(self, settings: TrainSettings | None = None, *, pause_on_disk_full: bool = False) -> None:
        super().__init__(settings, pause_on_disk_full=pause_on_disk_full)
        serve_training(self)
