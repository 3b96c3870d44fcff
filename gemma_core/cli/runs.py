"""``gemma-core status``, ``control`` and ``serve``: runs as services, from any terminal.

    gemma-core status DIR [--json]                 how a run stands, live or from its files
    gemma-core control DIR pause|resume|save|eval|stop
    gemma-core serve --checkpoint DIR [--host H] [--port P] [--api-key KEY]
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

from gemma_core.errors import EXIT_INTERRUPTED, UserError
from gemma_core.run.status import status_from_files
from gemma_core.safe_text import printable
from gemma_core.serve.status import run_status
from gemma_core.run.events import CheckpointSaved, EvalResult, RunFinished, StateChanged
from gemma_core.serve.client import RunNotRunning, connect
from gemma_core.serve.openai_api import Limits

CONTROL_COMMANDS = ("pause", "resume", "save", "eval", "stop")


# --------------------------------------------------------------------- status
def _format(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else f"{value:,}"


def _duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def cmd_status(args) -> int:
    status = run_status(Path(args.output_dir))
    if args.json:
        print(json.dumps(_nulls(status)))
        return 0
    lines = [f"run       {status['output_dir']} ({status['run_id']})",
             f"state     {status['state']}" + (" (live)" if status["live"] else ""),
             f"step      {status['step']:,} of {status['max_steps']:,}   tokens {status['tokens_seen']:,}",
             f"loss      train {_format(status['train_loss'])}   validation {_format(status['val_loss'])}   "
             f"best {_format(status['best_val_loss'])}   bits/byte {_format(status['bits_per_byte'])}"]
    if status["live"]:
        speed = status["tokens_per_s"]
        lines.append(f"speed     {speed:,.0f} tokens/s   eta {_duration(status['eta_s'])}" if speed else "speed     -")
    checkpoint = status["last_checkpoint"]
    lines.append(f"checkpoint step {checkpoint['step']:,} in {checkpoint['path']}" if checkpoint else
                 "checkpoint none yet")
    if status["error"]:
        lines.append(f"error     {status['error']}")
    if status.get("problem"):
        lines.append(f"server    {status['problem']}")
    if status.get("resume_command"):
        lines.append(f"resume    {status['resume_command']}")
    print(printable("\n".join(lines)))
    return 0


def _nulls(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    return value


# -------------------------------------------------------------------- control
def cmd_control(args) -> int:
    folder = Path(args.output_dir)
    try:
        client = connect(folder)
    except RunNotRunning as err:  # a live run that is slow, or another user's, is said as such by connect
        raise RunNotRunning(f"{err}{_resume_hint(folder)}") from None
    outcome = client.command(args.action)
    if isinstance(outcome, StateChanged):
        print(f"{outcome.state.value} at step {outcome.step:,}")
    elif isinstance(outcome, CheckpointSaved):
        print(printable(f"checkpoint saved at step {outcome.step:,} in {outcome.path}"))
    elif isinstance(outcome, EvalResult):
        print(f"step {outcome.step:,}: val loss {outcome.val_loss:.4f}  perplexity {outcome.perplexity:.2f}  "
              f"bits/byte {outcome.bits_per_byte:.4f}")
    elif isinstance(outcome, RunFinished):
        where = f"; checkpoint in {outcome.checkpoint}" if outcome.checkpoint else ""
        print(printable(f"stopped at step {outcome.step:,}{where}"))
    return 0


def _resume_hint(folder: Path) -> str:
    try:
        status = status_from_files(folder, died=True)
    except UserError:  # no run there to resume, or its files cannot be read: the error says enough
        return ""
    return f"; resume it with: {status['resume_command']}" if status.get("resume_command") else ""


# ---------------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from gemma_core.run.viewer import RunViewer
    from gemma_core.serve.server import RunServer, is_loopback, new_token

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be a port number from 0 to 65535, got {args.port}")
    if args.max_tokens < 1:
        raise UserError(f"--max_tokens must be 1 or more, got {args.max_tokens}")
    key = _api_key(args)
    made_key = key is None
    viewer = RunViewer(args.checkpoint, device=args.device, dtype=args.dtype)
    name = Path(args.checkpoint).resolve().name
    server = RunServer(viewer, name, host=args.host, port=args.port, token=key or new_token(),
                       limits=Limits(max_tokens=args.max_tokens), flags=("--host", "--port"))
    url = server.start()
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this port and has the key can use "
              "the model", file=sys.stderr)
    print(printable(f"serving {args.checkpoint} as model {name!r} on {url}/v1"))
    if made_key:
        print(f"API key (shown once): {server.token}")
    print("Ctrl-C stops serving", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        viewer.turns.serve(stop)  # replies decode on this thread: see ComputeTurns
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    return EXIT_INTERRUPTED


def _api_key(args) -> str | None:
    """The key given by --api-key, else by $GEMMA_STUDIO_API_KEY, checked before anything loads;
    None when neither gives one (one is made). ``--api-key ""`` is refused, never ignored."""
    from gemma_core.serve.server import check_api_key

    if args.api_key is not None:
        return check_api_key(args.api_key, "--api-key")
    from_environment = os.environ.get("GEMMA_STUDIO_API_KEY")
    return check_api_key(from_environment, "GEMMA_STUDIO_API_KEY") if from_environment else None


def add_commands(commands) -> None:
    status = commands.add_parser(
        "status", help="how a run stands: live from its server, or from its files",
        description="State, step, losses, tokens/s, ETA and last checkpoint of the run in DIR; for a run "
                    "that is not running, from its files, with the command that resumes it.")
    status.add_argument("output_dir", help="the run's --output_dir")
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")
    status.set_defaults(func=cmd_status)

    control = commands.add_parser(
        "control", help="pause, resume, save, evaluate or stop a live run; waits for the outcome",
        description="Send a command to the live run in DIR and print its outcome. Exits with 2 when the "
                    "run is not running.")
    control.add_argument("output_dir", help="the run's --output_dir")
    control.add_argument("action", choices=CONTROL_COMMANDS)
    control.set_defaults(func=cmd_control)

    serve = commands.add_parser(
        "serve", help="serve a checkpoint over the OpenAI API (/v1/models, completions, chat)",
        description="Answer OpenAI clients from a checkpoint's weights. Needs the API key on every "
                    "request (--api-key, GEMMA_STUDIO_API_KEY, or one made and printed now).")
    serve.add_argument("--checkpoint", required=True, help="a checkpoint or run directory")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", dest="api_key", default=None,
                       help="the key clients send: 16 or more printable ASCII characters, no spaces "
                            "(default: $GEMMA_STUDIO_API_KEY, else a new one)")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                       help="compute precision: auto (the one the run trained in), bf16, or fp32 (for "
                            "scoring: what transformers computes by default)")
    serve.add_argument("--max_tokens", type=int, default=2048, help="the most tokens one request may ask for")
    serve.set_defaults(func=cmd_serve)
