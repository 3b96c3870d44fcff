"""Output nobody can read and signals from outside: a command whose standard output is closed
or full says so in one line (exit 2) instead of working on unheard; SIGTERM and SIGHUP stop
a command as Ctrl-C does (exit 130, training saves first); one Ctrl-C that reaches the
process twice is one stop; the studio without a terminal refuses, and under a signal it
saves, restores the terminal and exits 130."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works

HAS_DEV_FULL = os.path.exists("/dev/full")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text(bundled_works()[0].text[:40_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path", str(text),
                 "--max_steps", "3", "--device", "cpu", "--dtype", "fp32"]) == 0
    return out


def shell(command: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)


def gemma(*args: str) -> str:
    return " ".join([sys.executable, "-m", "gemma_core", *[f"'{a}'" for a in args]])


def train_process(out: Path, text: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--preset", "nano", "--output_dir",
                             str(out), "--train_dataset_path", str(text), "--max_steps", "1000000",
                             "--device", "cpu", "--save_steps", "1000000", "--no-serve", *extra],
                            text=True, **popen)


def logged_steps(out: Path) -> int:
    try:
        return sum(1 for _ in open(out / "training_log.jsonl", encoding="utf-8"))
    except FileNotFoundError:
        return 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def saved_step(out: Path) -> int:
    return json.loads((out / "checkpoint" / "state.json").read_text())["step"]


# ------------------------------------------------------------------- outputs
@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize("args", [["summary", "--preset", "nano"], ["--help"]], ids=["summary", "help"])
def test_output_to_a_full_device_is_one_line_and_exit_2(args):
    result = shell(gemma(*args) + " >/dev/full")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: cannot write to standard output (No space left on device); "
                                     "point it at a file or terminal that takes output")


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_a_generation_nobody_can_read_stops_at_once(trained):
    result = shell(gemma("generate", "--checkpoint", str(trained), "--prompt", "KING",
                         "--max_new_tokens", "5") + " >/dev/full")
    assert result.returncode == 2 and "cannot write to standard output" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_closed_standard_output_is_said_not_crashed_on():
    result = shell(gemma("summary", "--preset", "nano") + " >&-")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: cannot write to standard output (it is closed)")


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_training_whose_output_is_lost_stops_with_a_checkpoint(tmp_path, text):
    out = tmp_path / "run"
    with open("/dev/full", "w") as full:
        process = train_process(out, text, stdout=full, stderr=subprocess.PIPE)
        _, err = process.communicate(timeout=240)
    assert process.returncode == 2, err
    assert err.startswith("error: cannot write to standard output (No space left on device)")
    assert len(err.strip().splitlines()) == 1
    # It stopped at once (its first line of output failed), not after a million unheard steps,
    # and said truly what it kept.
    if (out / "checkpoint").exists():
        assert f"the run stopped at step {saved_step(out)} with a checkpoint" in err
    else:
        assert err.strip().endswith("; the run stopped before its first checkpoint")
        assert logged_steps(out) < 100


# ------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_interrupt_a_command_like_ctrl_c(sig, trained):
    process = subprocess.Popen([sys.executable, "-m", "gemma_core", "generate", "--checkpoint", str(trained),
                                "--prompt", "KING", "--max_new_tokens", "1000000", "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.read(4) == "KING"  # the model is loaded and generating
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "error: interrupted"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_training_with_a_checkpoint(sig, tmp_path, text):
    out = tmp_path / "run"
    process = train_process(out, text, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: logged_steps(out) >= 5, 120, "five steps")
    process.send_signal(sig)
    output, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert saved_step(out) == logged_steps(out) >= 5
    assert "resume with: gemma-core train --resume" in output


def test_one_ctrl_c_that_arrives_twice_is_one_stop(tmp_path, text):
    """A terminal's Ctrl-C (and `timeout -s INT`) reaches the whole process group: the
    same press can come twice, within milliseconds. It stops once, with a checkpoint."""
    out = tmp_path / "run"
    process = train_process(out, text, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: logged_steps(out) >= 5, 120, "five steps")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted again" not in err
    assert saved_step(out) == logged_steps(out) >= 5


def test_a_second_ctrl_c_later_exits_at_once_and_says_what_is_kept(tmp_path):
    out = tmp_path / "run"
    text = tmp_path / "train.txt"  # ten times the module's text: evaluations long enough to interrupt
    text.write_text(bundled_works()[0].text[:400_000], encoding="utf-8")
    # Steps of several seconds (a whole evaluation after each), so the first stop is still pending.
    process = train_process(out, text, "--preset", "demo", "--no-compile", "--eval_iters", "1",
                            "--eval_batches", "100000", "--val_fraction", "0.5",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: logged_steps(out) >= 1, 240, "a step")
    process.send_signal(signal.SIGINT)
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted again: exiting without waiting (")
    # Whatever the line claims is true.
    if "no checkpoint" in last:
        assert not (out / "checkpoint").exists()
    else:
        assert f"step {saved_step(out)}" in last


# ------------------------------------------------------------------- studio
def test_the_studio_without_a_terminal_refuses_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gemma_tui", "--preset", "nano", "--max_steps", "3",
                             "--device", "cpu", "--output_dir", str(tmp_path / "run")],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: the studio needs a terminal, and standard input is not one")
    assert not (tmp_path / "run").exists()  # refused before anything started


def read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_studio_under_a_signal_saves_restores_the_terminal_and_exits_130(sig, tmp_path, text):
    out = tmp_path / "run"
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("TEXTUAL_DRIVER", None)
    process = subprocess.Popen([sys.executable, "-m", "gemma_tui", "launch", "--preset", "nano", "--output_dir",
                                str(out), "--train_dataset_path", str(text), "--max_steps", "1000000",
                                "--device", "cpu", "--save_steps", "1000000", "--no-serve"],
                               stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    try:
        screen = b""
        deadline = time.monotonic() + 180
        while logged_steps(out) < 5:
            assert time.monotonic() < deadline and process.poll() is None, screen[-2000:]
            screen += read_until(leader, b"\x00", 0.5)
        process.send_signal(sig)
        screen += read_until(leader, b"\x1b[?1049l", 120)  # the terminal's normal screen is back
        process.wait(120)
        screen += read_until(leader, b"\x00", 1.0)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.returncode == 130, screen[-3000:]
    assert b"\x1b[?1049l" in screen
    assert saved_step(out) == logged_steps(out) >= 5
