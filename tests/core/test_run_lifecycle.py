"""A run from claim to end: a claimed folder holds nothing of an old run, a stop is obeyed at
once even while data is prepared, samples never disturb training, and a resumed run must be
fed the data it was trained on."""

from __future__ import annotations

import json
import threading
import time

import pytest

from gemma_core.data.corpus import bundled_works
from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import LogMessage, RunFinished, RunState, SampleProduced, StepMetrics
from gemma_core.train.settings import TrainSettings


def nano(tmp_path, corpus, **overrides) -> TrainSettings:
    train, val = corpus
    values = dict(output_dir=str(tmp_path / "run"), train_dataset_path=str(train),
                  val_dataset_path=str(val), cache_dir=str(tmp_path / "cache"), device="cpu",
                  dtype="fp32", max_steps=12, eval_iters=6, save_steps=6, seed=3)
    values.update(overrides)
    return TrainSettings.for_preset("nano", **values)


def test_overwrite_removes_every_file_of_the_old_run_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    (folder / layout.CHECKPOINT).mkdir(parents=True)
    (folder / layout.PREVIOUS_CHECKPOINT).mkdir()
    for name in layout.RUN_FILES:
        (folder / name).write_text("old run")
    (folder / "my notes.txt").write_text("keep me")
    layout.claim_output_dir(folder, resume=False, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["my notes.txt"]


def test_a_new_run_stopped_before_its_first_evaluation_leaves_no_old_weights(tmp_path, corpus):
    TrainingEngine(nano(tmp_path, corpus)).run()
    assert (tmp_path / "run" / layout.WEIGHTS).exists()
    engine = TrainingEngine(nano(tmp_path, corpus, overwrite=True, max_steps=1000, eval_iters=500,
                                 save_steps=500, seed=4))

    def abandon_at_step_2(event):
        if isinstance(event, StepMetrics) and event.step == 2:
            engine.stop(save=False)

    engine.subscribe(abandon_at_step_2)
    engine.run()
    out = tmp_path / "run"
    assert not (out / layout.WEIGHTS).exists()  # no weights of the old run beside the new config
    assert json.loads((out / "config.json").read_text())["training"]["seed"] == 4
    assert not layout.has_checkpoint(out)


def test_stop_while_tokenizing_ends_the_run_at_once_without_a_checkpoint(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(w.text for w in bundled_works()) * 6, encoding="utf-8")  # ~30 MB
    settings = TrainSettings.for_preset("nano", output_dir=str(tmp_path / "run"),
                                        train_dataset_path=str(big), cache_dir=str(tmp_path / "cache"),
                                        device="cpu", dtype="fp32")
    engine = TrainingEngine(settings)
    tokenizing = threading.Event()
    finished: list[RunFinished] = []
    engine.subscribe(lambda e: tokenizing.set() if isinstance(e, LogMessage) and "preparing data" in e.text
                     else finished.append(e) if isinstance(e, RunFinished) else None)
    engine.start()
    assert tokenizing.wait(60)
    time.sleep(0.5)  # well into tokenizing
    asked = time.monotonic()
    outcome = engine.stop()
    assert engine.join(timeout=30)
    assert time.monotonic() - asked < 1.5
    assert outcome.result(timeout=1).checkpoint is None
    assert finished and finished[0].step == 0 and engine.exit_reason == "stopped"
    assert engine.snapshot().state is RunState.STOPPED  # before its first step: not "finished"
    assert not (tmp_path / "run").exists()  # nothing was claimed, nothing was written


def test_samples_mid_training_in_fp32_do_not_break_the_backward_pass(tmp_path, corpus):
    settings = nano(tmp_path, corpus, max_length=64, stride=64, train_batch_size=4, max_steps=6,
                    warmup_steps=1, sample_prompt=("ROMEO: What light",), sample_every=2,
                    sample_tokens=80, compile=False)
    samples = []
    engine = TrainingEngine(settings)
    engine.subscribe(lambda e: samples.append(e) if isinstance(e, SampleProduced) else None)
    final = engine.run()
    assert final.state is RunState.FINISHED and final.step == 6
    assert [s.step for s in samples] == [2, 4, 6]


def test_resume_on_a_changed_corpus_is_refused_in_one_line(tmp_path, corpus):
    TrainingEngine(nano(tmp_path, corpus)).run()
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["data_fingerprint"]["train_tokens"] > 0 and state["data_fingerprint"]["stride"] == 64
    train, _ = corpus
    changed = tmp_path / "changed.jsonl"
    changed.write_text(train.read_text().replace("the", "thee"), encoding="utf-8")
    engine = TrainingEngine.resume(tmp_path / "run", max_steps=20, train_dataset_path=str(changed),
                                   cache_dir=str(tmp_path / "cache"))
    engine.start()
    assert engine.join(timeout=120)
    error = engine.snapshot().error
    assert "state.json: the run was trained on other data" in error and "\n" not in error
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 12


def test_a_resumed_run_with_a_changed_stride_is_refused(tmp_path, corpus):
    TrainingEngine(nano(tmp_path, corpus)).run()
    with pytest.raises(UserError, match="its --stride differs \\(64 then, 32 now\\)"):
        TrainingEngine.resume(tmp_path / "run", max_steps=20, stride=32,
                              cache_dir=str(tmp_path / "cache")).run()


def test_the_eta_says_nothing_until_warm_up_is_over_then_follows_the_wall_clock():
    from gemma_core.train.engine import EtaEstimate

    eta = EtaEstimate()
    # A first step that compiles for 30 s, then a second a step, and an evaluation costing
    # 5 s every 10 steps: the time left must count the evaluations still to come.
    elapsed, estimates = 0.0, {}
    for step in range(1, 60):
        elapsed += 30.0 if step == 1 else 1.0
        if step % 10 == 0:
            elapsed += 5.0
        estimates[step] = eta.update(step, elapsed, max_steps=100)
    assert all(estimates[step] is None for step in range(1, 13))  # no 1h00m two seconds in
    assert estimates[13] is not None
    assert estimates[59] == pytest.approx(41 * 1.5, rel=0.1)  # 1 s a step plus 5 s per 10 steps
