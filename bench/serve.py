"""Runs as services: what watching and questioning a run costs it, and what the API costs a reply.

``python -m bench serve [--preset demo] [--steps 120] [--repeats 3]``

* **attach**: training tokens/s of a ``gemma-core train`` process with one studio
  attached from another process (the whole app, Textual's headless driver, following
  the run through its server) against the same run with nobody attached, turn about
  ``--repeats`` times; speed from each run's own training log between the same steps.
* **browser** (``--browser``): the same, with one page of ``gemma-tui serve`` open in
  headless Chromium (Debian's, driven by Playwright) instead of the terminal studio: the
  page's own studio process, the page server and the browser drawing it all share the
  machine with training.
* **status**: latency of one snapshot request on loopback (the call ``gemma-core
  status`` and every attached studio make), p50 and p99 over 300 calls to a live run.
* **completions**: tokens/s of a non-streamed ``/v1/completions`` reply from
  ``gemma-core serve`` against the same greedy continuation by the code ``gemma-core
  generate`` runs, in this process, on the same checkpoint and precision.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import report
from gemma_core.run.layout import TRAIN_STREAM
from gemma_core.run.logs import read_jsonl

ATTACHED_STUDIO = """
import asyncio, sys, time
from gemma_core.serve.client import RemoteEngine, RemoteTelemetry
from gemma_tui.app import create_app
engine = RemoteEngine(sys.argv[1])
app = create_app(engine, telemetry=RemoteTelemetry(engine.client))
async def watch():
    async with app.run_test(size=(160, 48)) as pilot:
        while app.snapshot is None:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        print("ready", flush=True)  # measuring starts now: the studio's start-up is not its running cost
        while engine.is_alive():
            await asyncio.sleep(0.5)
asyncio.run(watch())
"""

BROWSER_TAB = """
import os, re, subprocess, sys, time
from playwright.sync_api import sync_playwright
folder, chromium = sys.argv[1], sys.argv[2]
server = subprocess.Popen([sys.executable, "-m", "gemma_tui", "serve", folder, "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
link = next(m.group(1) for line in server.stdout if (m := re.search(r"open (http://\\S+)", line)))
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1600, "height": 960})
    page.goto(link)
    page.wait_for_timeout(3000)  # the page's studio starts and draws
    print("ready", flush=True)
    while os.path.exists(os.path.join(folder, "server.json")):  # the run removes it as it ends
        page.wait_for_timeout(1000)  # the page draws meanwhile
    browser.close()
server.send_signal(2)
server.wait(30)
"""


def start_run(folder: Path, preset: str, steps: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gemma_core", "train", "--preset", preset, "--output_dir",
                             str(folder), "--max_steps", str(steps), "--device", "cpu", "--eval_iters",
                             "100000", "--save_steps", "100000", "--warmup_steps", "1", "--no-compile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def wait_for_server(folder: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "server.json").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{folder}: the run did not start serving")
        time.sleep(0.05)


def tokens_per_s(folder: Path, skip: int) -> float:
    entries = read_jsonl(folder / TRAIN_STREAM)
    first, last = entries[skip - 1], entries[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])


class TreeCpu:
    """CPU seconds used by a process and its descendants over a window, by program,
    from /proc; a process that ends in the window keeps what it was last seen using."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.first: dict[int, float] = {}  # pid: CPU seconds when the window opened (0 if born in it)
        self.last: dict[int, tuple[str, float]] = {}  # pid: (program, CPU seconds when last seen)
        self.opened = False

    def sample(self) -> None:
        parents, seen = {}, {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = open(f"/proc/{entry.name}/stat").read().rsplit(")", 1)[1].split()
                program = open(f"/proc/{entry.name}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            seen[pid] = (_program_name(program), (int(fields[11]) + int(fields[12])) / tick)
        for pid, (program, seconds) in seen.items():
            ancestor = pid
            while ancestor not in (self.root, 0, 1) and ancestor in parents:
                ancestor = parents[ancestor]
            if ancestor != self.root:
                continue
            if pid not in self.first:
                self.first[pid] = seconds if not self.opened else 0.0
            self.last[pid] = (program, seconds)
        self.opened = True

    def by_program(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for pid, (program, seconds) in self.last.items():
            used[program] = used.get(program, 0.0) + seconds - self.first[pid]
        return used


def _program_name(argv: list[bytes]) -> str:
    words = [w.decode(errors="replace") for w in argv if w]
    if not words:
        return "?"
    if "chromium" in words[0]:
        kind = next((w.split("=", 1)[1] for w in words if w.startswith("--type=")), "browser")
        return f"chromium {kind}"
    if "-m" in words and words.index("-m") + 2 < len(words) + 1:
        i = words.index("-m")
        return " ".join(words[i + 1:i + 3])
    return os.path.basename(words[0])


def attach_ratio(root: Path, preset: str, steps: int, repeats: int, env: dict, chromium: str | None = None) -> dict:
    """Watched against headless training; watched by the terminal studio or, given
    ``chromium``, by one browser page."""
    watcher = [sys.executable, "-c", BROWSER_TAB] if chromium else [sys.executable, "-c", ATTACHED_STUDIO]
    extra = [chromium] if chromium else []
    name = "browser" if chromium else "attached"
    headless, attached, watcher_cpu = [], [], []
    for i in range(repeats):
        folder = root / f"{name}-{i}"
        run = start_run(folder, preset, steps, env)
        wait_for_server(folder)
        studio = subprocess.Popen([*watcher, str(folder), *extra], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)
        studio.stdout.readline()  # "ready": the watcher is up and drawing
        skip = len(read_jsonl(folder / TRAIN_STREAM)) + 1  # the window: from here to the run's end
        if skip > steps - 20:
            raise SystemExit(f"the watcher took until step {skip} of {steps} to start: give more --steps")
        cpu = TreeCpu(studio.pid)
        cpu.sample()
        watched_from = watched_to = time.monotonic()
        while run.poll() is None:
            cpu.sample()
            watched_to = time.monotonic()
            time.sleep(0.2)
        studio.wait(120)
        attached.append(tokens_per_s(folder, skip))
        seconds = max(watched_to - watched_from, 1e-9)
        watcher_cpu.append({program: used / seconds for program, used in cpu.by_program().items()})
        folder = root / f"{name}-headless-{i}"  # the same run, alone, over the same steps
        start_run(folder, preset, steps, env).wait()
        headless.append(tokens_per_s(folder, skip))
    ratios = [a / h for a, h in zip(attached, headless)]
    return {f"{name}_headless_tokens_per_s": [round(x) for x in headless],
            f"{name}_tokens_per_s": [round(x) for x in attached],
            f"{name}_over_headless": round(statistics.median(ratios), 3),
            # CPU seconds per second the watcher and its processes used while training was measured
            f"{name}_watcher_cores": round(statistics.median(sum(w.values()) for w in watcher_cpu), 3),
            f"{name}_watcher_cores_by_program": {
                program: round(statistics.median(w.get(program, 0.0) for w in watcher_cpu), 3)
                for program in sorted({p for w in watcher_cpu for p in w})}}


def status_latency(root: Path, env: dict) -> dict:
    from gemma_core.serve.client import connect

    folder = root / "status"
    run = start_run(folder, "nano", 10**7, env)
    try:
        wait_for_server(folder)
        client = connect(folder)
        client.snapshot()
        times = []
        for _ in range(300):
            started = time.perf_counter()
            client.snapshot()
            times.append(time.perf_counter() - started)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    times.sort()
    return {"status_p50_ms": round(1000 * times[len(times) // 2], 2),
            "status_p99_ms": round(1000 * times[int(len(times) * 0.99)], 2)}


def completions_ratio(root: Path, preset: str, env: dict, tokens: int = 200) -> dict:
    import torch

    from gemma_core.device import resolve_dtype
    from gemma_core.model.generation import SamplingParams, stream_text
    from gemma_core.run.model_dir import load_model_dir

    folder = root / "checkpoint"
    start_run(folder, preset, 20, env).wait()
    server = subprocess.Popen([sys.executable, "-m", "gemma_core", "serve", "--checkpoint", str(folder), "--port",
                               "0", "--api-key", "bench"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)
    try:
        url = urlsplit(server.stdout.readline().split(" on ")[1].strip())
        body = json.dumps({"model": folder.name, "prompt": "ROMEO:", "max_tokens": tokens, "temperature": 0,
                           "stop": None}).encode()

        def api() -> tuple[float, int]:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
            started = time.perf_counter()
            connection.request("POST", "/v1/completions", body=body,
                               headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
            reply = json.loads(connection.getresponse().read())
            seconds = time.perf_counter() - started
            connection.close()
            return seconds, reply["usage"]["completion_tokens"]

        model, tokenizer, _ = load_model_dir(folder, "cpu")
        dtype = resolve_dtype("auto", torch.device("cpu"))
        params = SamplingParams(max_new_tokens=tokens, temperature=0, stop_at_eos=False)

        def direct() -> tuple[float, int]:
            started = time.perf_counter()
            text = "".join(stream_text(model, tokenizer, "ROMEO:", params, dtype=dtype))
            return time.perf_counter() - started, len(tokenizer.encode(text))

        api(), direct()  # warm both
        api_rates, direct_rates = [], []
        for _ in range(5):
            seconds, n = direct()
            direct_rates.append(n / seconds)
            seconds, n = api()
            api_rates.append(n / seconds)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    return {"api_tokens_per_s": round(statistics.median(api_rates), 1),
            "generate_tokens_per_s": round(statistics.median(direct_rates), 1),
            "api_over_generate": round(statistics.median(api_rates) / statistics.median(direct_rates), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="nano, 200 steps, 2 repeats")
    parser.add_argument("--browser", action="store_true",
                        help="also measure one browser page (needs Debian's chromium and playwright)")
    parser.add_argument("--only", choices=("attach", "browser", "status", "completions"),
                        help="measure only this")
    args = parser.parse_args(argv)
    preset, steps, repeats = (("nano", 200, 2) if args.quick else (args.preset, args.steps, args.repeats))
    with tempfile.TemporaryDirectory() as root:
        env = dict(os.environ, GEMMA_STUDIO_CACHE=str(Path(root) / "cache"))
        results = {"preset": preset, "steps": steps, "repeats": repeats}
        wanted = {args.only} if args.only else {"attach", "status", "completions"} | (
            {"browser"} if args.browser else set())
        if "attach" in wanted:
            results.update(attach_ratio(Path(root), preset, steps, repeats, env))
        if "browser" in wanted:
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            if chromium is None:
                raise SystemExit("--browser needs Debian's chromium (apt-get install chromium)")
            results.update(attach_ratio(Path(root), preset, steps, repeats, env, chromium))
        if "status" in wanted:
            results.update(status_latency(Path(root), env))
        if "completions" in wanted:
            results.update(completions_ratio(Path(root), preset, env))
    report("serve", results)
    return 0
