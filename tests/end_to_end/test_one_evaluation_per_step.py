"""One evaluation per step, and the two validation logs always agree: evaluations asked of a
live run at a step it has already evaluated (`gemma-core control DIR eval` sent by several
terminals at once, or at a step its schedule evaluated) add nothing to validation_log.jsonl,
and validation_log.json (the seed's format) says what the stream says after every evaluation,
not only at the next checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from gemma_core.run.logs import RunLogs, ValidationLog, read_jsonl, truncate_logs_to
from tests.end_to_end.cli_in_process import run_cli_together
from tests.end_to_end.test_run_service import gemma, live, start_run, wait_until


def evaluation(step: int, loss: float) -> dict:
    return {"step": step, "val_loss": loss, "perplexity": 2.0, "bits_per_byte": 1.0,
            "tokens_seen": 512 * step}


def assert_logs_agree(folder: Path) -> list[dict]:
    stream = read_jsonl(folder / "validation_log.jsonl")
    assert json.loads((folder / "validation_log.json").read_text(encoding="utf-8")) == stream
    steps = [entry["step"] for entry in stream]
    assert len(steps) == len(set(steps)), f"a step evaluated twice: {steps}"
    return stream


# ---------------------------------------------------------------- the log itself
def test_a_step_already_evaluated_adds_no_entry_and_the_seed_log_follows_each_one(tmp_path):
    log = ValidationLog(tmp_path / "validation_log.jsonl", tmp_path / "validation_log.json")
    for entry in (evaluation(5, 3.0), evaluation(5, 3.0), evaluation(10, 2.5), evaluation(5, 3.0),
                  evaluation(10, 2.5)):
        log.append(entry)
        assert_logs_agree(tmp_path)
    log.close()
    assert [entry["step"] for entry in read_jsonl(tmp_path / "validation_log.jsonl")] == [5, 10]


def test_a_resumed_run_knows_the_steps_it_evaluated_and_its_seed_log_is_cut_back_too(tmp_path):
    logs = RunLogs(tmp_path)
    for step in (5, 10, 15):
        logs.val.append(evaluation(step, 3.0 - step / 10))
    logs.close()
    truncate_logs_to(tmp_path, 10)  # resuming from the checkpoint of step 10
    logs = RunLogs(tmp_path)
    assert [entry["step"] for entry in assert_logs_agree(tmp_path)] == [5, 10]
    logs.val.append(evaluation(10, 2.0))
    logs.val.append(evaluation(15, 1.5))
    logs.close()
    assert [entry["step"] for entry in assert_logs_agree(tmp_path)] == [5, 10, 15]


# ------------------------------------------------------------- a live run's evals
@pytest.mark.parametrize("eval_iters", ["100000", "1"], ids=["a-step-not-yet-evaluated",
                                                           "a-step-the-schedule-evaluated"])
def test_four_evaluations_asked_at_once_at_one_step_log_it_once_in_both_logs(tmp_path, eval_iters):
    folder = tmp_path / "run"
    process = start_run(folder, tmp_path / "cache", "--eval_iters", eval_iters)
    try:
        wait_until(lambda: live(folder), timeout=240, what="the run to serve")
        paused = gemma("control", str(folder), "pause", timeout=240)
        assert paused.returncode == 0, paused.stderr
        step = int(paused.stdout.split()[-1].replace(",", ""))
        asks = run_cli_together(*[("control", str(folder), "eval")] * 4, deadline_s=240)
        answers = [(ask.stdout, ask.stderr, ask.returncode) for ask in asks]
        stream = assert_logs_agree(folder)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
    for out, err, code in answers:
        assert code == 0 and err == "", err
        assert len(out.strip().splitlines()) == 1 and out.startswith(f"step {step:,}: val loss ")
    assert len({out for out, _, _ in answers}) == 1  # each was told the one evaluation of that step
    assert [entry["step"] for entry in stream].count(step) == 1
    assert assert_logs_agree(folder)  # and still after the run stopped and checkpointed
