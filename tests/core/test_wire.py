"""What a run's server sends its clients reads back as what the run had."""

from __future__ import annotations

import json

from gemma_core.serve.wire import event_from_wire, snapshot_from_wire, telemetry_from_wire, to_wire
from gemma_core.telemetry import GpuReading, HostReading, TelemetrySample, TorchMemory
from gemma_core.run import events as ev
from studio_preview import preview_snapshot


def test_a_snapshot_travels_as_json_and_comes_back_equal():
    snap = preview_snapshot(step=700, n_layers=6, state=ev.RunState.PAUSED, error="a reason")
    assert snapshot_from_wire(json.loads(json.dumps(to_wire(snap)))) == snap


def test_every_event_type_travels_and_keeps_its_type():
    events = [ev.StepMetrics(3, 10, 96, 2.5, 1e-3, 0.4, 900.0, 1.5, 8.0, None,
                             {"adamw": 1e-3, "muon": 1e-2}, "r"),
              ev.EvalResult(3, 96, 2.6, 13.5, 1.9, "r"), ev.CheckpointSaved(3, "/x/checkpoint", 1.0, "r"),
              ev.LayerStats(3, "grad norm", (0.1, 0.2), "r"), ev.SampleProduced(3, "KING", ": no", "r"),
              ev.LogMessage("warning", "careful", "r"), ev.StateChanged(ev.RunState.RUNNING, 3, "r"),
              ev.StepSkipped(4, 1, "r"), ev.RunFailed(4, "bad", True, "r"), ev.RunFinished(4, "stopped", None, "r")]
    for event in events:
        assert event_from_wire(json.loads(json.dumps(to_wire(event)))) == event


def test_a_telemetry_sample_travels():
    sample = TelemetrySample(12.5, GpuReading(0, "H100", 1, 2, 50.0, 60.0, 300.0, 700.0, 3),
                             TorchMemory(1, 2, 3), HostReading(12.0, 2, 100, 200), None)
    assert telemetry_from_wire(json.loads(json.dumps(to_wire(sample)))) == sample
