"""The ``gemma-tui`` command line.

    gemma-tui launch [every flag of gemma-core train] [--theme NAME]
    gemma-tui attach DIR [--theme NAME]
    gemma-tui open [DIR | --runs DIR] [--theme NAME]
    gemma-tui compare RUN RUN ... [--theme NAME]
    gemma-tui serve [DIR | launch flags] [--host H] [--port P] [--stop-on-exit]
    gemma-tui desktop [DIR | launch flags]
    gemma-tui                      (this help; launch flags alone mean ``launch``)

``launch`` trains in the studio's own process; quitting while it trains asks
whether to stop the run (with a checkpoint) or keep it training in the
background, where ``attach`` finds it again. ``attach`` shows a run that
another process trains (``gemma-core train``, a kept run); quitting detaches.
``open`` shows a finished run; without a folder it lists the runs under the current one
(or ``--runs DIR``) to open one or compare several. ``compare`` overlays runs' curves.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from gemma_core.cli import OneLineParser, debug_first, run_command, stop_signals_interrupt
from gemma_core.cli.output import safe_output_streams
from gemma_core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER, UserError
from gemma_core.run.handle import RunHandle
from gemma_core.safe_text import printable

THEME_HELP = ("studio theme: gemma-dark (default), gemma-light, any Textual theme, "
              "or a .toml theme file")


def build_parser() -> argparse.ArgumentParser:
    from gemma_core.cli.train import add_train_arguments

    parser = OneLineParser(
        prog="gemma-tui",
        description="Gemma Studio: train a Gemma 3 model, watch it learn, chat with it mid-training.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    launch = commands.add_parser(
        "launch", help="start training and open the studio (default: demo preset, bundled corpus)",
        description="Start a training run and watch it in the studio. Takes every flag of "
                    "'gemma-core train'. With --resume --output_dir DIR it continues a run.")
    add_train_arguments(launch)
    launch.add_argument("--theme", default=None, help=THEME_HELP)
    launch.set_defaults(func=cmd_launch)

    attach = commands.add_parser(
        "attach", help="watch and steer a run another process trains (gemma-core train, a kept run)",
        description="Open the studio on a live run in DIR, trained by another process on this machine: "
                    "its whole history, live curves, the training machine's pane, chat from its current "
                    "weights, pause/save/eval/stop. q detaches; the run goes on.")
    attach.add_argument("output_dir", help="the run's --output_dir")
    attach.add_argument("--theme", default=None, help=THEME_HELP)
    attach.add_argument("--cpu-pace", type=float, default=2.0, metavar="SECONDS",
                        help="while the run trains on a CPU, take its state and redraw every SECONDS "
                             "(default 2; a browser page's studio uses 4: every redraw takes from "
                             "training's cores)")
    attach.set_defaults(func=cmd_attach)

    for name, help_text, description in (
        ("serve", "the studio in a browser (a run folder, or launch flags to start a run)",
         "Serve the studio for a web browser at a printed link (it works once). Given a live run's "
         "folder, every page is a studio attached to that run; given launch flags (or nothing: the demo "
         "preset on the bundled corpus), the run starts in the background first. A run that has ended "
         "(before or while serving) is shown read-only, as gemma-tui open shows it, and serving says so "
         "with a new link. Ctrl+C stops serving and the run goes on, unless --stop-on-exit."),
        ("desktop", "the studio in a window of its own (a run folder, or launch flags to start a run)",
         "Open the studio in a native window (pywebview, the 'desktop' extra). Given a live run's folder "
         "it shows that run; given launch flags (or nothing) the run starts in the background first. "
         "Closing the window asks whether to stop the run or keep it training; SIGTERM or Ctrl+C closes it "
         "without asking (the run goes on, exit status 130). As root, the window's web engine runs without "
         "Chromium's sandbox, and says so.")):
        page = commands.add_parser(name, help=help_text, description=description)
        page.add_argument("run", nargs="?", default=None, help="a live run's folder (else: start one)")
        add_train_arguments(page)
        page.add_argument("--theme", default=None, help=argparse.SUPPRESS)
        if name == "serve":
            page.add_argument("--host", default="127.0.0.1",
                              help="address to listen on (default 127.0.0.1: this machine only)")
            page.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
            page.add_argument("--stop-on-exit", dest="stop_on_exit", action="store_true",
                              help="stop the run (saving a checkpoint) when serving stops")
            page.set_defaults(func=cmd_serve)
        else:
            page.set_defaults(func=cmd_desktop)

    open_run = commands.add_parser(
        "open", help="open a finished run: its curves, and chat with its weights (no folder: pick one)",
        description="Open a finished run's output directory in the studio (no training). Without one, "
                    "list the runs under the current folder (or --runs DIR) with their state, step, best "
                    "validation loss and date: Enter opens one (a live run is attached), Space marks runs "
                    "and c compares the marked ones.")
    open_run.add_argument("output_dir", nargs="?", default=None, help="the run's --output_dir (else: pick one)")
    open_run.add_argument("--runs", default=None, metavar="DIR",
                          help="the folder whose runs the picker lists (default: the current folder)")
    open_run.add_argument("--device", default="auto", help="auto, cpu or cuda (for chat)")
    open_run.add_argument("--theme", default=None, help=THEME_HELP)
    open_run.set_defaults(func=cmd_open)

    compare = commands.add_parser(
        "compare", help="overlay the loss curves of two or more runs on one chart",
        description="Show the validation loss and the smoothed training loss of two or more runs on one "
                    "chart, by step or by tokens (t), each run named in the legend. Read from the runs' "
                    "logs, live runs included (read again every few seconds).")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two or more)")
    compare.add_argument("--theme", default=None, help=THEME_HELP)
    compare.set_defaults(func=cmd_compare)
    return parser


def run_studio(engine: RunHandle, theme: str | None, debug: bool = False, telemetry=None, **app_options) -> int:
    """Run the app on ``engine``; whatever happens, the engine's threads end first.

    The exit status follows gemma-core's: 2 when the run failed on the user's
    input or environment, 1 when something failed that is a bug (in the run or in
    the studio), 0 otherwise.
    """
    from gemma_core.run.events import RunState
    from gemma_tui.app import GemmaStudio, create_app
    from gemma_tui.formatting import resume_command
    from gemma_tui.screens.quit_choice import KEEP

    options = dict(app_options) if telemetry is None else {**app_options, "telemetry": telemetry}
    app = create_app(engine, theme=theme, debug=debug, **options)
    app.handles_signals = True
    try:
        choice = app.run()
    finally:
        if not engine.owns_run:
            engine.close()
        elif engine.is_alive():  # the app's own quit path already did this; this is the net
            engine.stop(save=True)
            if not engine.join(timeout=GemmaStudio.QUIT_TIMEOUT_S):
                print("the trainer did not stop in time; exiting without it (the last complete "
                      "checkpoint is kept)", file=sys.stderr)
    snap = engine.snapshot()
    if snap.error:
        print(printable(f"error: training failed at step {snap.step}: {snap.error}"), file=sys.stderr)
        return EXIT_INTERNAL if snap.error_internal else EXIT_USER
    if app.return_code:  # the studio itself failed (its one line is already printed)
        return EXIT_INTERNAL
    if getattr(app, "interrupted", False):
        kept = (f"; checkpoint: {snap.last_checkpoint.path} (step {snap.last_checkpoint.step})"
                if engine.owns_run and snap.last_checkpoint is not None else "")
        print(printable(f"error: interrupted{kept}"), file=sys.stderr)
        return EXIT_INTERRUPTED
    if choice == KEEP and snap.last_checkpoint is not None:
        return keep_training_in_background(snap.output_dir)
    if not engine.owns_run and engine.is_alive():
        print(printable(f"detached; the run goes on (gemma-tui attach {snap.output_dir} comes back)"))
    elif snap.last_checkpoint is not None:
        print(printable(f"checkpoint: {snap.last_checkpoint.path} (step {snap.last_checkpoint.step})"))
        if engine.owns_run and snap.state is RunState.STOPPED:  # stopped before its last step
            print(f"resume with: {resume_command(snap.output_dir)}")
    return EXIT_OK


def require_terminal() -> None:
    """The studio draws on a terminal and reads its keys: without one it would draw into a
    file (or a pipe) forever. Pages served by textual-serve bring their own driver."""
    import os

    if os.environ.get("TEXTUAL_DRIVER"):
        return
    streams = (("standard input", sys.__stdin__), ("standard error", sys.__stderr__))
    for name, stream in streams:
        try:
            is_terminal = stream is not None and stream.isatty()
        except (ValueError, OSError):
            is_terminal = False
        if not is_terminal:
            raise UserError(f"the studio needs a terminal, and {name} is not one; for a run without one "
                            "use gemma-core train (and gemma-core status), or gemma-tui serve for a browser")


def cmd_launch(args: argparse.Namespace) -> int:
    from gemma_core.cli.train import settings_from_args
    from gemma_core.run.layout import check_output_dir
    from gemma_core.serve.training import serve_training
    from gemma_core.train.engine import TrainingEngine

    # A person is watching: a full disk pauses training until they free space.
    settings = settings_from_args(args)
    # A folder that cannot take this run is said now, as gemma-core train says it, not by a
    # studio that opens only to fail at step 0 (a resumed run's settings were read from there,
    # which checked it).
    if not settings.resume:
        check_output_dir(Path(settings.output_dir), resume=False, overwrite=settings.overwrite)
    require_terminal()
    engine = serve_training(TrainingEngine(settings, pause_on_disk_full=True))  # attach, status, control
    engine.start()
    return run_studio(engine, args.theme, args.debug)


def cmd_attach(args: argparse.Namespace) -> int:
    from gemma_core.serve.client import RemoteEngine, RemoteTelemetry

    if not 0.5 <= args.cpu_pace <= 60:
        raise UserError(f"--cpu-pace must be between 0.5 and 60 seconds, got {args.cpu_pace:g}")
    engine = RemoteEngine(args.output_dir, cpu_interval_s=args.cpu_pace)
    try:
        require_terminal()
    except UserError:
        engine.close()
        raise
    return run_studio(engine, args.theme, args.debug, telemetry=RemoteTelemetry(engine.client),
                      cpu_pace_s=args.cpu_pace)


def cmd_open(args: argparse.Namespace) -> int:
    if args.output_dir is None:
        return pick_a_run(args)
    if args.runs is not None:
        raise UserError("give a run folder or --runs DIR, not both")
    return open_finished_run(Path(args.output_dir), args)


def open_finished_run(folder: Path, args: argparse.Namespace) -> int:
    from gemma_core.run.viewer import RunViewer

    viewer = RunViewer(folder, device=args.device)  # a missing or damaged run is said first
    try:
        require_terminal()
    except UserError:
        viewer.close()
        raise
    return run_studio(viewer, args.theme, args.debug)


def pick_a_run(args: argparse.Namespace) -> int:
    """The run picker, then the studio on the run chosen (or the comparison of those marked);
    leaving that (q) comes back to the list, on the run left, until the list is left with q."""
    from gemma_core.serve.catalog import find_runs
    from gemma_tui.run_picker import COMPARE, RunPicker

    root = Path(args.runs) if args.runs is not None else Path(".")
    entries = find_runs(root)
    if not entries:
        raise UserError(f"{root.resolve()}: no runs in this folder or the folders below it (a run folder "
                        "holds config.json, logs or a checkpoint); name another with --runs DIR, or start "
                        "one with gemma-tui launch")
    require_terminal()
    last: Path | None = None
    notice: str | None = None
    while True:
        choice = RunPicker(root, entries, theme=wanted_theme(args.theme), cursor_on=last, notice=notice).run()
        if choice is None:
            return EXIT_OK
        kind, chosen = choice
        last, notice = chosen[0].folder, None
        try:
            if kind == COMPARE:
                status = show_comparison([entry.folder for entry in chosen], args.theme)
            elif chosen[0].live:
                args.output_dir = str(chosen[0].folder)
                status = cmd_attach(args)
            else:
                status = open_finished_run(chosen[0].folder, args)
        except UserError as err:  # this run cannot be shown: said in the list, which stays
            notice = str(err)
            status = EXIT_OK
        if status in (EXIT_INTERRUPTED, EXIT_INTERNAL):  # Ctrl+C, a lost terminal or a crash ends it all
            return status
        entries = find_runs(root)


def wanted_theme(flag: str | None) -> str | None:
    """--theme, else the theme the studio last remembered."""
    from gemma_tui.preferences import Preferences

    return flag or Preferences.load()[0].theme


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise UserError("compare needs two run folders or more (gemma-tui open lists the runs under a folder)")
    return show_comparison([Path(run) for run in args.runs], args.theme)


def show_comparison(folders: list[Path], theme: str | None) -> int:
    from gemma_tui.compare import CompareApp

    app = CompareApp(folders, theme=wanted_theme(theme))  # a folder without a run is said first
    require_terminal()
    app.run()
    return EXIT_INTERNAL if app.return_code else EXIT_OK


def _run_for_pages(args: argparse.Namespace) -> Path:
    """The live run the pages show: the folder given, or a run started now from the launch flags."""
    from gemma_core.cli.train import settings_from_args
    from gemma_core.errors import UserError
    from gemma_core.train.settings import TrainSettings
    from gemma_tui.browser import start_run_in_background

    train_flags = [name for name in TrainSettings.__dataclass_fields__ if name in vars(args)]
    if args.run is not None:
        if train_flags or getattr(args, "config", None):
            raise UserError("give a run folder or launch flags, not both (the folder's run keeps its own settings)")
        return Path(args.run)
    settings = settings_from_args(args)  # every mistake is found before anything starts
    pid = start_run_in_background(_train_argv(args), Path(settings.output_dir))
    print(printable(f"training {settings.output_dir} in the background (process {pid}; its output in "
                    f"{settings.output_dir}/train.log)"))
    return Path(settings.output_dir)


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The launch flags ``gemma-tui serve|desktop`` parsed, as ``gemma-core train`` takes them.

    Rebuilt from the parsed values under their full names, never copied from the command
    line: an abbreviation (``--po`` for ``--port``) or a flag of this command's own would
    reach gemma-core train, which would refuse it in its own name, in the run's log."""
    from gemma_core.cli.train import add_train_arguments

    train = argparse.ArgumentParser(add_help=False)
    add_train_arguments(train)
    out: list[str] = []
    for action in train._actions:
        if action.dest not in vars(args):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[0]
        if value is None:
            continue
        if isinstance(value, bool):  # store_true, or --x / --no-x
            out.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(action, argparse._AppendAction):
            out.extend(f"{flag}={item}" for item in value)
        elif isinstance(value, (list, tuple)):  # nargs: numbers, which never read as flags
            out.extend([flag, *map(str, value)])
        else:
            out.append(f"{flag}={value}")  # "=": a value starting with "-" is not read as a flag
    return out


def check_can_listen(host: str, port: int) -> None:
    """Refuse, in one line naming the flag, an address or port the pages cannot listen on,
    before a run is started for them (it would be left training for nobody to see).
    Bound as aiohttp binds (every address of ``host``, SO_REUSEADDR), then let go."""
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as err:
        raise UserError(f"gemma-tui serve: --host {host} is not an address of this machine "
                        f"({getattr(err, 'strerror', None) or err}); give one, such as 127.0.0.1") from None
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as err:
                advice = ("another --port (0: any free one)" if err.errno in (errno.EADDRINUSE, errno.EACCES)
                          else "another --host")
                raise UserError(f"gemma-tui serve: cannot listen on {host}:{port} ({err.strerror or err}); "
                                f"give {advice}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from gemma_core.errors import UserError
    from gemma_tui.browser import serve_in_browser

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be a port number from 0 to 65535, got {args.port}")
    check_can_listen(args.host, args.port)  # before a run starts for pages that could not be served
    started_here = args.run is None
    return serve_in_browser(_run_for_pages(args), args.host, args.port, args.stop_on_exit,
                            started_here=started_here)


def cmd_desktop(args: argparse.Namespace) -> int:
    from gemma_tui.desktop import open_window, require_window_toolkit

    require_window_toolkit()  # say what is missing before starting a run
    return open_window(_run_for_pages(args))


def keep_training_in_background(output_dir: str) -> int:
    """The studio stopped its run with a checkpoint to hand it on: train on from that checkpoint
    in a process of its own, in a session of its own, so closing the terminal leaves it be."""
    import os
    import subprocess
    import time
    from pathlib import Path

    from gemma_core.serve.server import read_server_files

    folder = Path(output_dir)
    log = folder / "train.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--resume", "--output_dir",
                                    str(folder)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   start_new_session=True, close_fds=True, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = read_server_files(folder)
        if found is not None and found[0].get("pid") == process.pid:
            print(printable(f"training goes on in the background (process {process.pid}; its output in "
                            f"{log}); watch it with: gemma-tui attach {folder}"))
            return EXIT_OK
        time.sleep(0.2)
    if process.poll() is not None:
        print(printable(f"error: the run did not start again in the background (exit status "
                        f"{process.returncode}); see {log}, or resume it with: gemma-core train --resume "
                        f"--output_dir {folder}"), file=sys.stderr)
        return EXIT_USER
    print(printable(f"training goes on in the background (process {process.pid}, still starting; its "
                    f"output in {log}); watch it with: gemma-tui attach {folder}"))
    return EXIT_OK


COMMANDS = ("launch", "attach", "open", "compare", "serve", "desktop")


def with_default_command(argv: list[str]) -> list[str]:
    """Launch flags without a command (``gemma-tui --preset nano``) mean ``gemma-tui launch``;
    bare ``gemma-tui`` prints the help: a training run is never started by surprise."""
    lead = [a for a in argv[:1] if a == "--debug"]
    rest = argv[len(lead):]
    if not rest:
        rest = ["--help"]
    elif rest[0] not in COMMANDS + ("-h", "--help"):
        rest = ["launch", *rest]
    return lead + rest


def main(argv: list[str] | None = None) -> int:
    safe_output_streams()
    stop_signals_interrupt()
    raw = with_default_command(debug_first(argv))

    return run_command(lambda: build_parser().parse_args(raw))


if __name__ == "__main__":
    sys.exit(main())
