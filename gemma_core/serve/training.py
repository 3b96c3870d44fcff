"""A training run's HTTP API, as a companion of its engine: the server ``gemma-core train``,
``gemma-tui launch`` and the Python API's ``gemma_core.TrainingEngine`` start beside a run.

The engine starts it on its training thread (rank 0, once the run folder is checked and
locked, before the data is prepared) and closes it as the run ends, so the server files
exist exactly while the run holds its folder; a port that cannot be served fails the run.
"""

from __future__ import annotations

from gemma_core.run.events import LogMessage
from gemma_core.serve.openai_api import Limits
from gemma_core.serve.server import RunServer, is_loopback
from gemma_core.telemetry import TelemetrySampler
from gemma_core.train.engine import TrainingEngine


class TrainingServer:
    """The run's API on this machine, found through server.json in the run folder."""

    def __init__(self, engine: TrainingEngine) -> None:
        self.engine = engine
        self.server: RunServer | None = None

    def start(self) -> None:
        engine, s = self.engine, self.engine.settings
        # Kept before start(): a start that fails half way (its files partly written) is still closed.
        self.server = RunServer(engine, engine.output_dir.name, host=s.serve_host, port=s.serve_port,
                                folder=engine.output_dir, limits=Limits(), telemetry=TelemetrySampler(),
                                flags=("--serve_host", "--serve_port"))
        url = self.server.start()
        self._log(f"serving this run on {url} (gemma-tui attach {engine.output_dir}; the key is in "
                  f"{engine.output_dir / 'server.token'})")
        if not is_loopback(s.serve_host):
            self._log(f"the run's API listens on {s.serve_host}: anyone who can reach that address and "
                      "has the key can control the run and read the model", "warning")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _log(self, text: str, level: str = "info") -> None:
        self.engine.store.publish(LogMessage(level, text))


def serve_training(engine: TrainingEngine) -> TrainingEngine:
    """Have ``engine`` serve its run's API while it trains, when its settings ask (``serve``)."""
    if engine.settings.serve:
        engine.add_companion(TrainingServer(engine))
    return engine
