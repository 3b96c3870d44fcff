"""Each evaluation measures every layer on one fixed probe prompt: attention entropy (per head,
in nats) and residual RMS. The run's validation log keeps them, history reading and an
attached studio get them back, and logs written before them still load."""

from __future__ import annotations

import json
import math

import pytest

from gemma_core.errors import UserError
from gemma_core.inspect import MAX_TOKENS, layer_statistics
from gemma_core.run.history import read_run_history
from gemma_core.run.viewer import RunViewer
from gemma_core.serve.wire import event_from_wire, snapshot_from_wire, to_wire
from gemma_core.tokenizers.tokenizer import load_tokenizer
from gemma_core.train.distributed import Ranks
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import EvalResult, LayerProbe, LogMessage, RunState
from gemma_core.run.layer_probe import PROBE_TEXT, probe_token_ids
from studio_preview import preview_snapshot
from tests.core.test_training import nano_settings

STEPS, EVAL_EVERY = 6, 3


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory, corpus):
    """A nano run evaluated at steps 3 and 6; beside each evaluation event, ``layer_statistics``
    of the probe prompt computed at that moment (on the training thread: that step's weights)."""
    tmp_path = tmp_path_factory.mktemp("probe")
    engine = TrainingEngine(nano_settings(tmp_path, corpus, max_steps=STEPS, eval_iters=EVAL_EVERY,
                                          save_steps=STEPS))
    seen: list[tuple[EvalResult, list[dict]]] = []

    def measure(event):
        if isinstance(event, EvalResult):
            ids = probe_token_ids(engine.tokenizer, engine.model_config.context_length)
            seen.append((event, layer_statistics(engine.model, ids)))

    engine.subscribe(measure)
    engine.start()
    assert engine.join(timeout=240)
    assert engine.snapshot().state is RunState.FINISHED, engine.snapshot().error
    return engine, seen, tmp_path / "run"


def test_each_evaluation_carries_layer_statistics_of_the_probe_prompt_for_that_steps_weights(probed_run):
    engine, seen, _ = probed_run
    assert [event.step for event, _ in seen] == [3, 6]
    for event, expected in seen:
        assert [(layer.index, layer.type) for layer in event.layers] == [(0, "sliding"), (1, "full")]
        for layer, row in zip(event.layers, expected):
            assert len(layer.entropy) == engine.model_config.n_heads
            assert layer.entropy == pytest.approx(row["entropy"], abs=1e-6)
            assert layer.entropy_mean == pytest.approx(row["entropy_mean"], abs=1e-6)
            assert layer.residual_rms == pytest.approx(row["residual_rms"], rel=1e-6)
    assert seen[0][0].layers != seen[1][0].layers  # the weights moved between the two


def test_the_snapshot_keeps_each_evaluations_layers(probed_run):
    engine, seen, _ = probed_run
    assert [e.layers for e in engine.snapshot().eval_history] == [event.layers for event, _ in seen]


def test_the_validation_log_line_holds_each_layers_entropy_and_residual_rms(probed_run):
    _, seen, folder = probed_run
    for name in ("validation_log.jsonl", "validation_log.json"):
        text = (folder / name).read_text()
        entries = [json.loads(line) for line in text.splitlines()] if name.endswith("l") else json.loads(text)
        for entry, (event, _) in zip(entries, seen, strict=True):
            assert entry["layers"] == [{"index": layer.index, "type": layer.type, "entropy": list(layer.entropy),
                                        "residual_rms": layer.residual_rms} for layer in event.layers]


def test_reading_a_finished_runs_history_restores_the_layers(probed_run):
    _, seen, folder = probed_run
    assert [e.layers for e in read_run_history(folder, STEPS).evals] == [event.layers for event, _ in seen]
    opened = RunViewer(folder).snapshot()  # what gemma-tui open shows
    assert [e.layers for e in opened.eval_history] == [event.layers for event, _ in seen]


def test_the_probe_prompt_is_one_fixed_text_cut_to_the_models_context():
    tokenizer = load_tokenizer("shakespeare-4k")
    whole = tokenizer.encode_document(PROBE_TEXT)
    assert 128 < len(whole) <= MAX_TOKENS  # longer than the small presets' sliding windows
    assert probe_token_ids(tokenizer, 1024) == whole
    assert probe_token_ids(tokenizer, 16) == whole[:16]
    assert len(probe_token_ids(tokenizer, 100_000)) == min(len(whole), MAX_TOKENS)


def test_under_fsdp_nothing_is_measured_and_the_run_says_so_once(tmp_path, corpus):
    engine = TrainingEngine(nano_settings(tmp_path, corpus))
    engine.ranks = Ranks(rank=0, world_size=2, fsdp=True)
    said = []
    engine.subscribe(lambda event: said.append(event) if isinstance(event, LogMessage) else None)
    assert engine._probe_layers() == () and engine._probe_layers() == ()
    assert len(said) == 1 and "--fsdp" in said[0].text
    engine.ranks = Ranks(rank=1, world_size=2)  # another rank of a DDP run: the main rank measures
    assert engine._probe_layers() == ()


# ------------------------------------------------------------- older and damaged logs
OLD_ENTRIES = [{"step": 50, "val_loss": 5.1, "perplexity": 164.0, "bits_per_byte": 1.9, "tokens_seen": 100},
               {"step": 100, "val_loss": 4.2}]  # the seed's own keys only


@pytest.mark.parametrize("log_name", ["validation_log.jsonl", "validation_log.json"])
def test_a_validation_log_from_before_the_probe_still_loads(tmp_path, log_name):
    path = tmp_path / log_name
    if log_name.endswith("l"):
        path.write_text("".join(json.dumps(e) + "\n" for e in OLD_ENTRIES))
    else:
        path.write_text(json.dumps(OLD_ENTRIES))
    evals = read_run_history(tmp_path, 200).evals
    assert [(e.step, e.val_loss, e.layers) for e in evals] == [(50, 5.1, ()), (100, 4.2, ())]


@pytest.mark.parametrize("layers", [
    "not a list", [{"index": 0, "type": "sliding", "entropy": ["x"], "residual_rms": 1.0}],
    [{"index": 0, "type": "diagonal", "entropy": [1.0], "residual_rms": 1.0}],
    [{"index": 0, "type": "full", "entropy": [1.0]}], [7]])
def test_a_damaged_probe_in_the_log_is_named_by_file_and_line(tmp_path, layers):
    entries = [OLD_ENTRIES[0], {**OLD_ENTRIES[1], "layers": layers}]
    (tmp_path / "validation_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    with pytest.raises(UserError, match=r"validation_log\.jsonl:2: damaged log line: 'layers'"):
        read_run_history(tmp_path, 200)


# ------------------------------------------------------------------------ the wire
PROBE = (LayerProbe(0, "sliding", (1.25, 0.5, 2.0, 0.125), 3.5), LayerProbe(1, "full", (0.75,) * 4, 4.25))


def test_the_wire_carries_an_evaluations_layers():
    event = EvalResult(6, 3072, 4.5, 90.0, 2.1, "r", layers=PROBE)
    assert event_from_wire(json.loads(json.dumps(to_wire(event)))) == event


def test_a_snapshot_on_the_wire_keeps_every_evaluations_layers():
    snap = preview_snapshot(step=700, n_layers=6)
    assert snap.eval_history and all(e.layers for e in snap.eval_history)
    back = snapshot_from_wire(json.loads(json.dumps(to_wire(snap))))
    assert back.eval_history == snap.eval_history and back.best_eval == snap.best_eval


def test_an_evaluation_from_a_server_without_the_probe_reads_with_no_layers():
    data = to_wire(EvalResult(6, 3072, 4.5, 90.0, 2.1, "r"))
    del data["layers"]
    assert event_from_wire(data).layers == ()
    assert math.isnan(LayerProbe(0, "full", (), 1.0).entropy_mean)
