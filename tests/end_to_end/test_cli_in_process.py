"""The tests' in-process command line (cli_in_process) is what a subprocess would be: it gives
the command what a process gets, puts back what the command changes, and cuts off a command
that waits for ever, so that a test of a bounded command still fails when it is not bounded."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from gemma_core.cli import runs
from tests.end_to_end.cli_in_process import run_cli, run_cli_together

HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM)


def test_a_refusal_is_its_exit_status_and_one_line_and_nothing_is_left_changed(tmp_path, capsys):
    handlers = {sig: signal.getsignal(sig) for sig in HANDLED}
    streams, argv, cwd, env = (sys.stdin, sys.stdout, sys.stderr), sys.argv, os.getcwd(), dict(os.environ)
    result = run_cli("status", str(tmp_path / "none"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == handlers
    assert (sys.stdin, sys.stdout, sys.stderr) == streams and sys.argv == argv
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert capsys.readouterr() == ("", "")  # nothing reached the test's own output


def test_help_is_exit_0_with_the_help_on_stdout():
    result = run_cli("open", "--help", tool="gemma_tui")
    assert result.returncode == 0 and result.stdout.startswith("usage: gemma-tui open")


def test_commands_run_together_each_get_their_own_output(tmp_path):
    missing, unknown = run_cli_together(("status", str(tmp_path / "none")), ("frobnicate",))
    assert missing.returncode == unknown.returncode == 2
    assert "none" in missing.stderr and "frobnicate" not in missing.stderr
    assert "invalid choice: 'frobnicate'" in unknown.stderr and "none" not in unknown.stderr


def test_a_command_that_waits_for_ever_fails_the_test_at_its_deadline(tmp_path, monkeypatch):
    fifo = tmp_path / "nobody-writes"
    os.mkfifo(fifo)
    monkeypatch.setattr(runs, "cmd_status", lambda args: fifo.read_text())  # blocks on open
    with pytest.raises(AssertionError, match="did not finish within 1 s"):
        run_cli("status", str(tmp_path), deadline_s=1)
