"""Settings the checks used to accept and something later broke on, or silently ignored:
every value accepted works, every value refused is refused at once, in one line naming
it, before a run folder exists, and a setting that does nothing with the others is said."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from gemma_core.cli import build_parser, main
from gemma_core.cli.train import settings_from_args
from gemma_core.errors import UserError
from gemma_core.model.generation import sample_next
from gemma_core.model.sampling import SamplingParams
from gemma_tui import cli as tui_cli
from gemma_tui.themes import ThemeFileError, load_theme_file
from tests.end_to_end.cli_in_process import run_cli
from tests.end_to_end.test_hostile_input import assert_one_line_refusal

TINY = (1e-300, 5e-324, 1e-45)  # positive, so accepted; 0 in float32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--preset", "nano", "--output_dir", str(out), "--max_steps", "2", "--warmup_steps", "1",
                 "--eval_iters", "2", "--device", "cpu", "--dtype", "fp32", "--no-serve",
                 "--cache_dir", str(out.parent / "cache")]) == 0
    return out


# ------------------------------------------------------------- sampling
@pytest.mark.parametrize("tiny", TINY)
@pytest.mark.parametrize("setting", ["temperature", "top_p"])
def test_a_vanishing_temperature_or_top_p_picks_the_likeliest_token(setting, tiny):
    logits = torch.randn(3, 300, generator=torch.Generator().manual_seed(1)) * 4
    params = SamplingParams(**{setting: tiny})
    params.validate()
    picked = sample_next(logits, params, torch.Generator().manual_seed(0))
    assert picked.tolist() == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("flags", [["--temperature", "1e-300"], ["--top_p", "5e-324"],
                                   ["--temperature", "1e-45", "--top_p", "1e-300", "--top_k", "1000000000"]])
def test_gemma_core_generate_answers_at_every_accepted_setting(checkpoint, capsys, flags):
    code = main(["generate", "--checkpoint", str(checkpoint), "--prompt", "To be", "--max_new_tokens", "4",
                 "--device", "cpu", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("To be")


@pytest.mark.parametrize("field, value, expected", [
    ("top_k", "5", "--top_k must be a whole number, got '5'"),
    ("temperature", "0.5", "--temperature must be a number, got '0.5'"),
    ("seed", 1.5, "--seed must be a whole number, got 1.5"),
    ("max_new_tokens", True, "--max_new_tokens must be a whole number, got True"),
    ("top_p", [0.5], "--top_p must be a number, got [0.5]"),
    ("stop_strings", "END", "stop_strings must be a list of strings, got 'END'"),
])
def test_a_sampling_setting_of_the_wrong_type_is_named_with_the_type_it_needs(field, value, expected):
    with pytest.raises(UserError) as err:
        SamplingParams(**{field: value}).validate()
    assert str(err.value) == expected


# ------------------------------------------------------- settings files
def train_refusal(tmp_path: Path, capsys, *flags: str) -> str:
    """Run ``gemma-core train`` expecting a one-line refusal; the run folder never appears."""
    out = tmp_path / "never"
    code = main(["train", "--preset", "nano", "--output_dir", str(out), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert not out.exists(), err
    return code, err


@pytest.mark.parametrize("text, expected", [
    ('train_dataset_path = ["a.txt", "b.txt"]\n', "'train_dataset_path' must be text, got ['a.txt', 'b.txt']"),
    ("eos_token = 5\n", "'eos_token' must be text, got 5"),
    ("learning_rate = { peak = 1 }\n", "'learning_rate' must be a number, got {'peak': 1}"),
    ('betas = ["a", 0.9]\n', "'betas' must be a list of 2 numbers"),
    ("sample_prompt = [1, 2]\n", "'sample_prompt' must be a list of strings"),
    ("val_dataset_path = 3\n", "'val_dataset_path' must be text"),
    ('[model]\nemb_dim = "wide"\n', "field 'emb_dim' must be a whole number"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("[model]\nlayer_types = " + "[" * 30 + "]" * 30 + "\n", "nested too deeply"),
])
def test_a_config_value_of_the_wrong_shape_is_refused_naming_its_key(tmp_path, capsys, text, expected):
    config = tmp_path / "run.toml"
    config.write_text(text, encoding="utf-8")
    assert_one_line_refusal(*train_refusal(tmp_path, capsys, "--config", str(config)), expected)


def test_a_deeply_nested_json_config_is_refused(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    assert_one_line_refusal(*train_refusal(tmp_path, capsys, "--config", str(config)), "nested too deeply")


@pytest.fixture
def fifo(tmp_path):
    """A FIFO nobody writes: reading it waits forever. (Should a reader wait on it anyway, a
    writer comes after a minute and goes, so that the test fails rather than hangs.)"""
    path = tmp_path / "fifo.toml"
    os.mkfifo(path)

    def release() -> None:
        with contextlib.suppress(OSError):  # no reader: nothing to release
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(60, release)
    timer.start()
    yield path
    timer.cancel()


@pytest.fixture(params=["fifo", "directory", "huge"])
def not_a_file(request, tmp_path) -> tuple[Path, str]:
    if request.param == "fifo":
        return request.getfixturevalue("fifo"), "a pipe (FIFO), not a file"
    path = tmp_path / f"{request.param}.toml"
    if request.param == "directory":
        path.mkdir()
        return path, "a directory, not a file"
    path.write_bytes(b"# padding\n" * 200_000)
    return path, "too large"


def test_a_config_that_is_not_a_small_regular_file_is_refused_without_reading_it(tmp_path, capsys, not_a_file):
    path, expected = not_a_file
    assert_one_line_refusal(*train_refusal(tmp_path, capsys, "--config", str(path)), expected)
    assert_one_line_refusal(main(["summary", "--config", str(path)]), capsys.readouterr().err, expected)
    with pytest.raises(ThemeFileError, match=re.escape(expected)):
        load_theme_file(path)


def _small_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a reader of /dev/zero fails, not the machine


@pytest.mark.parametrize("command", [["gemma_core", "summary", "--config", "/dev/zero"],
                                     ["gemma_core", "train", "--config", "/dev/zero", "--output_dir", "{out}"]])
def test_a_config_naming_an_endless_device_is_refused_without_reading_it(tmp_path, command):
    out = tmp_path / "never"
    result = subprocess.run([sys.executable, "-m", *(word.format(out=out) for word in command)],
                            capture_output=True, text=True, timeout=180, preexec_fn=_small_address_space)
    assert_one_line_refusal(result.returncode, result.stderr, "/dev/zero: a device, not a file")
    assert not out.exists()


# ---------------------------------------------------------------- numbers
@pytest.mark.parametrize("flags, expected", [
    (["--optimizer", "muon", "--muon_learning_rate", "1e308"], "--muon_learning_rate 1e+308 is beyond float32"),
    (["--muon_learning_rate", "1e39"], "--muon_learning_rate 1e+39 is beyond float32"),
    (["--learning_rate", "1e300"], "--learning_rate 1e+300 is beyond float32"),
    (["--grad_clip", "1e300"], "--grad_clip 1e+300 is beyond float32"),
    (["--weight_decay", "5e38"], "--weight_decay 5e+38 is beyond float32"),
    (["--max_steps", str(10**23)], "--max_steps 100000000000000000000000 is beyond a 64-bit whole number"),
])
def test_a_number_past_what_training_computes_in_is_refused_before_the_run_folder_exists(tmp_path, capsys, flags,
                                                                                         expected):
    assert_one_line_refusal(*train_refusal(tmp_path, capsys, *flags), expected)


# ------------------------------------------------- settings that do nothing
@pytest.mark.parametrize("flags, config, expected", [
    (["--schedule", "cosine", "--decay_fraction", "0.3"], "",
     "warning: --decay_fraction does nothing with --schedule cosine; it counts with --schedule wsd"),
    (["--optimizer", "adamw", "--muon_learning_rate", "0.05"], "",
     "warning: --muon_learning_rate does nothing with --optimizer adamw; it counts with --optimizer muon"),
    (["--optimizer", "adamw"], "muon_momentum = 0.9\n",
     "warning: --muon_momentum does nothing with --optimizer adamw; it counts with --optimizer muon"),
    (["--sample_prompt", "Once"], "", "warning: --sample_prompt does nothing with --sample_every 0"),
    (["--no-serve"], "serve_port = 9000\n", "warning: --serve_port does nothing with --no-serve"),
])
def test_a_setting_that_does_nothing_with_the_others_is_said_in_one_line(tmp_path, capsys, flags, config, expected):
    extra = []
    if config:
        (tmp_path / "run.toml").write_text(config, encoding="utf-8")
        extra = ["--config", str(tmp_path / "run.toml")]
    settings_from_args(build_parser().parse_args(["train", "--preset", "nano", *flags, *extra]))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_defaults_and_settings_that_count_are_not_warned_about(capsys):
    for flags in (["--optimizer", "adamw"], ["--optimizer", "muon", "--muon_learning_rate", "0.05"],
                  ["--schedule", "wsd", "--decay_fraction", "0.3"],
                  ["--sample_prompt", "Once", "--sample_every", "5", "--sample_tokens", "9"]):
        settings_from_args(build_parser().parse_args(["train", "--preset", "nano", *flags]))
    assert capsys.readouterr().err == ""


# --------------------------------------------------------- gemma-tui serve
def gemma_tui(*args: str) -> subprocess.CompletedProcess:
    """``gemma-tui`` run in this process, as a subprocess would see it (see cli_in_process)."""
    return run_cli(*args, tool="gemma_tui")


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("flags, expected", [
    (["--port", "{port}"], "give another --port"),
    (["--po", "{port}"], "give another --port"),  # an abbreviation: still gemma-tui serve's own flag
    (["--host", "999.1.1.1"], "--host 999.1.1.1 is not an address"),
])
def test_serve_refuses_an_address_it_cannot_listen_on_before_starting_a_run(tmp_path, taken_port, flags, expected):
    run = tmp_path / "run"
    try:
        result = gemma_tui("serve", "--preset", "nano", "--output_dir", str(run), "--device", "cpu",
                           *(flag.format(port=taken_port) for flag in flags))
        assert_one_line_refusal(result.returncode, result.stderr, expected)
        assert result.stderr.startswith("error: gemma-tui serve: ")
        assert not run.exists()  # no run was started, so none is left training
    finally:
        if run.exists():  # a run started all the same is not left training after the test
            subprocess.run([sys.executable, "-m", "gemma_core", "control", str(run), "stop"],
                           capture_output=True, timeout=180)


def test_the_run_serve_starts_gets_the_launch_flags_by_their_full_names_and_nothing_else():
    args = tui_cli.build_parser().parse_args(
        ["serve", "--po", "8001", "--preset", "nano", "--max_st", "3", "--sample_prompt=-dash", "--betas", "0.8",
         "0.9", "--no-serve", "--stop-on-exit", "--host", "127.0.0.1", "--config", "run.toml"])
    forwarded = tui_cli._train_argv(args)
    again = build_parser().parse_args(["train", *forwarded])  # gemma-core train takes every word of it
    assert not any(word.startswith(("--po=", "--port", "--host", "--stop")) for word in forwarded)
    assert (again.max_steps, again.sample_prompt, again.betas, again.serve, again.config) == \
        (3, ["-dash"], [0.8, 0.9], False, "run.toml")


def test_paths_from_python_are_taken_as_the_paths_they_name(tmp_path):
    from gemma_core.train.settings import TrainSettings

    settings = TrainSettings.for_preset(preset="nano", output_dir=tmp_path / "run",
                                        train_dataset_path=tmp_path / "train.txt", cache_dir=tmp_path / "cache")
    assert settings.output_dir == str(tmp_path / "run")
    assert settings.train_dataset_path == str(tmp_path / "train.txt") and settings.cache_dir == str(tmp_path / "cache")
    assert TrainSettings(output_dir=tmp_path / "other").output_dir == str(tmp_path / "other")
