"""A run's server flooded by someone who holds no key: training must not notice.

``python -m bench flood [--preset nano] [--steps 600] [--repeats 2] [--connections 2000] [--bodies 300]
[--nofile 1024]``

Each repeat trains the same run twice over the same steps, turn about: once alone, once
while another process, without the key,

* opens ``--connections`` TCP connections to the run's API one after another and holds them
  to the run's end (far more than the server's connection cap and, before the cap existed,
  more than the run's descriptors: ``--nofile``), and meanwhile
* posts ``--bodies`` gzip bodies that would inflate to 64 MiB each, with no key.

The run must finish with exit 0, and its training losses must equal the undisturbed run's
at every step (the flood changes nothing the run computes). The figure is tokens/s over
the steps trained while the flood was being made, against tokens/s over the same steps of
the undisturbed run, each from its own training log. The flood's own process shares the
machine: on two cores, what it costs is in the figure.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import report
from bench.serve import wait_for_server
from gemma_core.run.layout import TRAIN_STREAM
from gemma_core.run.logs import read_jsonl

BOMB_INFLATED = 64 << 20


def start_run(folder: Path, preset: str, steps: int, env: dict, nofile: int) -> subprocess.Popen:
    def descriptors() -> None:  # as a login shell usually allows: 1,024
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    return subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--preset", preset, "--output_dir",
                             str(folder), "--max_steps", str(steps), "--device", "cpu", "--eval_iters", "100000",
                             "--save_steps", "100000", "--warmup_steps", "1", "--no-compile", "--seed", "7"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=descriptors)


def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * BOMB_INFLATED, compresslevel=9)


class Flood:
    """``connections`` keyless connections (opened one after another and held) and ``bodies``
    keyless gzip bodies (from four threads), against one address, from this process."""

    def __init__(self, host: str, port: int, connections: int, bodies: int) -> None:
        self.address = (host, port)
        self.connections, self.bodies = connections, bodies
        self.opened = self.refused = self.posted = self.answered = 0
        self.done = threading.Event()  # every attempt made, every body sent
        self._release = threading.Event()  # the held connections may close
        self._count = threading.Lock()
        self.bomb = gzip_bomb()
        self._held: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._post_bodies, daemon=True) for _ in range(4)]
        self._holder = threading.Thread(target=self._hold_connections, daemon=True)

    def start(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, self.connections + 256)), hard))
        self.started = time.monotonic()
        for thread in (self._holder, *self._threads):
            thread.start()
        threading.Thread(target=self._finish, daemon=True).start()

    def _finish(self) -> None:
        for thread in (self._holder, *self._threads):
            thread.join()
        self.seconds = time.monotonic() - self.started
        self.done.set()

    def close(self) -> None:
        self._release.set()
        for sock in self._held:
            sock.close()

    def _hold_connections(self) -> None:
        for _ in range(self.connections):
            sock = socket.socket()
            sock.settimeout(1.0)
            try:
                sock.connect(self.address)
                self._held.append(sock)
                self.opened += 1
            except OSError:
                sock.close()
                self.refused += 1  # the server's queue was full: the attempt went unanswered

    def _post_bodies(self) -> None:
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json\r\n"
                f"Content-Encoding: gzip\r\nContent-Length: {len(self.bomb)}\r\n\r\n").encode("ascii")
        while True:
            with self._count:
                if self.posted >= self.bodies:
                    return
                self.posted += 1
            try:
                with socket.create_connection(self.address, timeout=10) as sock:
                    sock.sendall(head)
                    try:
                        sock.sendall(self.bomb)
                    except OSError:
                        pass  # the server may answer and close before the whole body arrives
                    if sock.recv(64).startswith(b"HTTP/1.1"):
                        with self._count:
                            self.answered += 1
            except OSError:
                pass


def window_tokens_per_s(folder: Path, first: int, last: int) -> float:
    """Tokens per second between training-log entries ``first`` and ``last`` (1-based steps)."""
    entries = read_jsonl(folder / TRAIN_STREAM)
    a, b = entries[first - 1], entries[min(last, len(entries)) - 1]
    return (b["tokens_seen"] - a["tokens_seen"]) / (b["elapsed_s"] - a["elapsed_s"])


def losses(folder: Path) -> list[float]:
    return [entry["train_loss"] for entry in read_jsonl(folder / TRAIN_STREAM)]


def one_pair(root: Path, i: int, args, env: dict) -> dict:
    from gemma_core.serve.server import read_server_files

    flooded = root / f"flooded-{i}"
    run = start_run(flooded, args.preset, args.steps, env, args.nofile)
    wait_for_server(flooded)
    info, _ = read_server_files(flooded)  # the address only: the key is not used
    host, port = info["url"].removeprefix("http://").rsplit(":", 1)
    flood = Flood(host.strip("[]"), int(port), args.connections, args.bodies)
    while len(read_jsonl(flooded / TRAIN_STREAM)) < 20 and run.poll() is None:  # past warm-up
        time.sleep(0.1)
    first = len(read_jsonl(flooded / TRAIN_STREAM)) + 1
    flood.start()
    while not flood.done.wait(0.2) and run.poll() is None:
        pass
    last = len(read_jsonl(flooded / TRAIN_STREAM))
    _, stderr = run.communicate(timeout=3600)  # the held connections stay open to the end
    flood.close()
    if run.returncode != 0:
        raise SystemExit(f"the flooded run failed (exit {run.returncode}): {stderr.strip()[-2000:]}")
    if last - first < 10:
        raise SystemExit(f"the flood lasted {last - first} steps: too few to measure")
    alone = root / f"alone-{i}"
    quiet = start_run(alone, args.preset, args.steps, env, args.nofile)
    _, quiet_err = quiet.communicate(timeout=3600)
    if quiet.returncode != 0:
        raise SystemExit(f"the undisturbed run failed (exit {quiet.returncode}): {quiet_err.strip()[-2000:]}")
    return {"alone": window_tokens_per_s(alone, first, last),
            "flooded": window_tokens_per_s(flooded, first, last),
            "losses_equal": losses(flooded) == losses(alone), "window": [first, last],
            "flood_s": round(getattr(flood, "seconds", float("nan")), 1), "opened": flood.opened,
            "unanswered": flood.refused, "bodies": flood.posted, "bodies_answered": flood.answered,
            "traceback_in_stderr": "Traceback" in stderr}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flood", description=__doc__)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--bodies", type=int, default=300)
    parser.add_argument("--nofile", type=int, default=1024,
                        help="the runs' limit on open files (default 1,024, a login shell's usual limit)")
    parser.add_argument("--quick", action="store_true", help="300 steps, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 300, 1
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    with tempfile.TemporaryDirectory() as root:
        env = dict(os.environ, GEMMA_STUDIO_CACHE=str(Path(root) / "cache"))
        pairs = [one_pair(Path(root), i, args, env) for i in range(args.repeats)]
    ratios = [p["flooded"] / p["alone"] for p in pairs]
    report("flood", {
        "preset": args.preset, "steps": args.steps, "repeats": args.repeats, "run_nofile": args.nofile,
        "alone_tokens_per_s": [round(p["alone"]) for p in pairs],
        "flooded_tokens_per_s": [round(p["flooded"]) for p in pairs],
        "flooded_over_alone": round(statistics.median(ratios), 3),
        "losses_equal": all(p["losses_equal"] for p in pairs),
        "flood_window_steps": [p["window"] for p in pairs], "flood_seconds": [p["flood_s"] for p in pairs],
        "connections_opened": [p["opened"] for p in pairs],
        "connections_unanswered": [p["unanswered"] for p in pairs],
        "compressed_bodies": [p["bodies"] for p in pairs],
        "compressed_bodies_answered": [p["bodies_answered"] for p in pairs],
        "traceback_in_run_stderr": any(p["traceback_in_stderr"] for p in pairs)})
    return 0 if all(p["losses_equal"] for p in pairs) else 1
