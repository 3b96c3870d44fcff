"""Snapshots, events, outcomes and telemetry as JSON, and back: what a run's server sends
its attached clients. Plain data in, plain data out; nothing is ever unpickled."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from gemma_core.errors import UserError
from gemma_core.telemetry import GpuReading, HostReading, TelemetrySample, TorchMemory
from gemma_core.run import events as ev

EVENT_TYPES = {cls.__name__: cls for cls in (
    ev.StepMetrics, ev.EvalResult, ev.CheckpointSaved, ev.LayerStats, ev.SampleProduced, ev.LogMessage,
    ev.StateChanged, ev.StepSkipped, ev.RunFailed, ev.RunFinished)}


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_wire(value: Any) -> Any:
    """Dataclasses and enums as JSON values (tuples stay tuples: JSON writes them as arrays);
    an event carries its type's name."""
    if isinstance(value, (tuple, list)):
        # A history of plain numbers is passed as it is: the common case, and the long one.
        if not value or not (dataclasses.is_dataclass(value[0]) or isinstance(value[0], enum.Enum)):
            return value
        return [to_wire(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {name: to_wire(getattr(value, name)) for name in _field_names(type(value))}
        if type(value).__name__ in EVENT_TYPES:
            data["type"] = type(value).__name__
        return data
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    return value


def _build(cls: type, data: dict) -> Any:
    names = _field_names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


def _eval_result(data: dict) -> ev.EvalResult:
    """An evaluation with its per-layer probe (a server from before the probe sends none)."""
    layers = tuple(_build(ev.LayerProbe, {**layer, "entropy": tuple(layer["entropy"])})
                   for layer in data.get("layers", ()))
    return _build(ev.EvalResult, {**data, "layers": layers})


def event_from_wire(data: dict) -> ev.Event:
    try:
        cls = EVENT_TYPES[data["type"]]
        fields = dict(data)
        if cls is ev.StateChanged:
            fields["state"] = ev.RunState(fields["state"])
        if cls is ev.LayerStats:
            fields["values"] = tuple(fields["values"])
        if cls is ev.EvalResult:
            return _eval_result(fields)
        return _build(cls, fields)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"the run's server sent an event this client cannot read ({err!r}); "
                        "are the two from the same version?") from None


def snapshot_from_wire(data: dict) -> ev.RunSnapshot:
    try:
        fields = dict(data)
        fields["state"] = ev.RunState(fields["state"])
        fields["latest"] = _build(ev.StepMetrics, fields["latest"]) if fields.get("latest") else None
        fields["train_history"] = tuple(tuple(p) for p in fields["train_history"])
        fields["lr_history"] = tuple(tuple(p) for p in fields["lr_history"])
        fields["eval_history"] = tuple(_eval_result(e) for e in fields["eval_history"])
        fields["best_eval"] = _eval_result(fields["best_eval"]) if fields.get("best_eval") else None
        checkpoint = fields.get("last_checkpoint")
        fields["last_checkpoint"] = _build(ev.CheckpointSaved, checkpoint) if checkpoint else None
        stats = fields.get("layer_stats")
        fields["layer_stats"] = (_build(ev.LayerStats, {**stats, "values": tuple(stats["values"])})
                                 if stats else None)
        fields["messages"] = tuple(_build(ev.LogMessage, m) for m in fields["messages"])
        fields["samples"] = tuple(_build(ev.SampleProduced, m) for m in fields.get("samples", ()))
        return _build(ev.RunSnapshot, fields)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"the run's server sent a snapshot this client cannot read ({err!r}); "
                        "are the two from the same version?") from None


def telemetry_from_wire(data: dict) -> TelemetrySample:
    gpu, memory = data.get("gpu"), data.get("torch_memory")
    return TelemetrySample(time=data["time"], gpu=_build(GpuReading, gpu) if gpu else None,
                           torch_memory=_build(TorchMemory, memory) if memory else None,
                           host=_build(HostReading, data["host"]), gpu_unavailable=data.get("gpu_unavailable"))
