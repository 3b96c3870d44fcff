"""Runs as services: what watching and questioning a run costs it, and what the API costs a reply.

``python -m bench serve [--preset demo] [--steps 120] [--repeats 3]``

* **attach**: training tokens/s of a ``gemma-core train`` process with one studio
  attached from another process (the whole app, Textual's headless driver, following
  the run through its server) against the same run with nobody attached, turn about
  ``--repeats`` times; speed from each run's own training log between the same steps.
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
        while engine.is_alive():
            await asyncio.sleep(0.5)
asyncio.run(watch())
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


def attach_ratio(root: Path, preset: str, steps: int, repeats: int, env: dict) -> dict:
    skip = max(5, steps // 10)
    headless, attached = [], []
    for i in range(repeats):
        folder = root / f"headless-{i}"
        start_run(folder, preset, steps, env).wait()
        headless.append(tokens_per_s(folder, skip))
        folder = root / f"attached-{i}"
        run = start_run(folder, preset, steps, env)
        wait_for_server(folder)
        studio = subprocess.Popen([sys.executable, "-c", ATTACHED_STUDIO, str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        run.wait()
        studio.wait(60)
        attached.append(tokens_per_s(folder, skip))
    ratios = [a / h for a, h in zip(attached, headless)]
    return {"headless_tokens_per_s": [round(x) for x in headless],
            "attached_tokens_per_s": [round(x) for x in attached],
            "attached_over_headless": round(statistics.median(ratios), 3)}


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
    args = parser.parse_args(argv)
    preset, steps, repeats = (("nano", 200, 2) if args.quick else (args.preset, args.steps, args.repeats))
    with tempfile.TemporaryDirectory() as root:
        env = dict(os.environ, GEMMA_STUDIO_CACHE=str(Path(root) / "cache"))
        results = {"preset": preset, "steps": steps, "repeats": repeats}
        results.update(attach_ratio(Path(root), preset, steps, repeats, env))
        results.update(status_latency(Path(root), env))
        results.update(completions_ratio(Path(root), preset, env))
    report("serve", results)
    return 0
