"""`gemma-tui`: its commands and flags, mistakes reported in one line, threads always joined."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gemma_tui.app
from gemma_core.cli.train import settings_from_args
from gemma_core.run.events import RunState
from gemma_tui import cli
from studio_preview import PreviewEngine
from tests.end_to_end.cli_in_process import run_cli


def parse(*argv: str):
    return cli.build_parser().parse_args(cli.with_default_command(list(argv)))


def test_bare_command_prints_the_help_and_starts_no_run(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gemma-tui") and "launch" in out and "attach" in out


def test_launch_without_flags_trains_the_demo_on_the_bundled_corpus():
    args = parse("launch")
    assert args.command == "launch" and args.theme is None
    settings = settings_from_args(args)
    assert settings.preset == "demo" and settings.train_dataset_path is None  # bundled corpus


def test_a_folder_holding_another_run_is_refused_before_the_studio_opens(tmp_path, monkeypatch, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "training_log.json").write_text("[]")
    monkeypatch.setattr(cli, "run_studio", lambda *a, **k: pytest.fail("the studio opened"))
    assert cli.main(["launch", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path}: holds a run that stopped before its first checkpoint, so there is "
                   "nothing to resume; pass --overwrite to start it again, or choose another --output_dir")


def test_launch_takes_every_train_flag_and_a_theme():
    args = parse("--preset", "nano", "--max_steps", "70", "--theme", "gemma-light")
    assert args.command == "launch" and args.theme == "gemma-light"
    settings = settings_from_args(args)
    assert (settings.preset, settings.max_steps) == ("nano", 70)
    assert parse("--debug", "launch", "--learning_rate", "0.01").learning_rate == 0.01


def test_open_takes_a_directory():
    args = parse("open", "runs/a", "--theme", "nord")
    assert (args.command, args.output_dir, args.theme) == ("open", "runs/a", "nord")


def test_mistakes_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["launch", "--max_steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max_steps must be positive, got 0"
    assert cli.main(["open", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def open_and_quit_at_once(monkeypatch) -> None:
    """The studio opens and the user quits it at once: what run_studio does afterwards is tested."""

    class AppThatReturnsAtOnce:
        return_code = 0

        def run(self):
            return None

    monkeypatch.setattr(gemma_tui.app, "create_app", lambda engine, theme=None, debug=False: AppThatReturnsAtOnce())


def test_studio_exit_always_stops_and_joins_the_engine(monkeypatch):
    open_and_quit_at_once(monkeypatch)
    engine = PreviewEngine(alive=True)
    assert cli.run_studio(engine, None) == 0
    assert engine.calls == ["stop(save=True)"] and not engine.is_alive()


@pytest.mark.parametrize("internal, code", [(False, 2), (True, 1)], ids=["user's input", "a bug"])
def test_the_studio_exits_with_its_runs_failure(monkeypatch, capsys, internal, code):
    from dataclasses import replace

    from studio_preview import preview_snapshot

    open_and_quit_at_once(monkeypatch)
    failed = replace(preview_snapshot(state=RunState.FAILED, error="the reason"), error_internal=internal)
    assert cli.run_studio(PreviewEngine(failed), None) == code
    assert capsys.readouterr().err.strip() == "error: training failed at step 640: the reason"


def test_a_crash_inside_the_studio_is_one_line_and_exit_1(monkeypatch, capsys):
    from gemma_tui.widgets.run_stats import RunStats

    def broken(self, snapshot):
        raise ValueError("a bug in a pane")

    monkeypatch.setattr(RunStats, "describe", broken)
    app = gemma_tui.app.create_app(PreviewEngine(), telemetry_hz=0)

    async def crash():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)

    import asyncio
    with pytest.raises(ValueError):
        asyncio.run(crash())
    assert app.return_code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("error: internal error (ValueError: a bug in a pane); this is a bug: run the command again "
            "with --debug to see where, and please report it") in " ".join(err.split())


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "gemma_tui", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert "launch" in out.stdout and "open" in out.stdout


@pytest.mark.parametrize("command", ["launch", "open"])
def test_each_command_has_help(command):
    out = run_cli(command, "--help", tool="gemma_tui")
    assert out.returncode == 0 and "--theme" in out.stdout


def test_quitting_a_run_stopped_early_prints_the_command_that_resumes_it(monkeypatch, capsys):
    open_and_quit_at_once(monkeypatch)
    engine = PreviewEngine(alive=True)
    assert cli.run_studio(engine, None) == 0
    out = capsys.readouterr().out
    snap = engine.snapshot()
    assert snap.state is RunState.STOPPED
    assert f"resume with: gemma-tui launch --resume --output_dir {snap.output_dir}" in out
