"""Studio overhead: training tokens/s with the studio open against headless training,
and training tokens/s while a chat reply is being generated.

All in one process on the same config (demo preset by default, bundled corpus,
CPU): a headless engine, then an engine driven by the studio (Textual's headless
driver renders every frame exactly as on a terminal), alternated ``--repeats``
times with medians taken, then a headless engine that answers chat prompts back
to back. It also reports the UI thread's CPU time as a share of one core
(``ui_thread_cpu``). Training speed is taken from the
training log's wall-clock between the same step numbers in each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.common import report
from gemma_core.model.generation import SamplingParams
from gemma_core.run.layout import TRAIN_STREAM
from gemma_core.run.logs import read_jsonl
from gemma_core.api import TrainingEngine  # serves, as gemma-core train's does
from gemma_core.train.settings import TrainSettings


def settings(folder: Path, preset: str, steps: int):
    return TrainSettings.for_preset(preset, output_dir=str(folder), max_steps=steps, device="cpu",
                                    eval_iters=10_000, save_steps=10_000, warmup_steps=1, compile=False)


def tokens_per_s(folder: Path, skip: int) -> float:
    """Tokens per wall-clock second between step ``skip`` and the last step."""
    entries = read_jsonl(folder / TRAIN_STREAM)
    first, last = entries[skip - 1], entries[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])


def headless(folder: Path, preset: str, steps: int) -> None:
    engine = TrainingEngine(settings(folder, preset, steps))
    engine.start()
    engine.join()


def with_studio(folder: Path, preset: str, steps: int, size: tuple[int, int] = (160, 45),
                open_view: str | None = None) -> float:
    """Train with the studio open (on ``open_view``: see ``open_in``); return the UI thread's
    CPU time as a share of one core."""
    from gemma_tui.app import create_app

    engine = TrainingEngine(settings(folder, preset, steps))
    app = create_app(engine)
    ui_share = {}

    async def drive():
        async with app.run_test(size=size) as pilot:
            await open_in(app, engine, open_view)
            cpu, wall = time.thread_time(), time.perf_counter()
            # A plain sleep, not pilot.pause: the pilot waits for the screen to settle
            # and forces redraws, which would bill the studio for the benchmark's own
            # polling (about 3% of a core at five polls a second).
            while engine.snapshot().step < steps and engine.snapshot().error is None:
                await asyncio.sleep(0.5)
            ui_share["cpu"] = (time.thread_time() - cpu) / (time.perf_counter() - wall)
            await pilot.pause(0.5)

    engine.start()
    asyncio.run(drive())
    engine.join()
    return ui_share["cpu"]


async def open_in(app, engine: TrainingEngine, view: str | None) -> None:
    """Open ``view`` once the model is ready: ``charts`` is the Charts screen (g), redrawing as
    the run trains; ``inspect`` is the Inspect screen after its first pass (the last chat prompt,
    else ROMEO:), then idle, as one reads it."""
    if view is None:
        return
    while not engine.ready.is_set() and engine.is_alive():
        await asyncio.sleep(0.2)
    if view == "charts":  # the Charts screen (g), drawn for the whole run
        from gemma_tui.screens.charts import ChartsScreen

        app.action_show_charts()
        while not isinstance(app.screen, ChartsScreen):
            await asyncio.sleep(0.2)
    if view == "inspect":
        from gemma_tui.screens.inspect import InspectScreen

        app.action_inspect()
        while not (isinstance(app.screen, InspectScreen) and app.screen.found is not None
                   or isinstance(app.screen, InspectScreen) and app.screen.problem is not None):
            await asyncio.sleep(0.2)


def with_chat(folder: Path, preset: str, steps: int) -> dict:
    engine = TrainingEngine(settings(folder, preset, steps))
    replies = {"tokens": 0}
    started = threading.Event()

    def chat_forever():
        engine.ready.wait()
        params = SamplingParams(max_new_tokens=64, temperature=0.8, top_k=50, seed=0)
        while engine.is_alive() and engine.snapshot().step < steps:
            job = engine.chat("ROMEO:", params)
            started.set()
            replies["tokens"] += sum(1 for _ in job)

    engine.start()
    chatter = threading.Thread(target=chat_forever, daemon=True)
    chatter.start()
    engine.join()
    chatter.join(timeout=30)
    return replies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tui", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="nano preset, few steps")
    parser.add_argument("--preset", default=None, help="the model preset trained (default demo; nano with --quick)")
    parser.add_argument("--size", default="160x45", help="the studio's terminal size, COLUMNSxROWS")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="headless/studio pairs, alternated")
    parser.add_argument("--open", choices=["charts", "inspect"], default=None, dest="open_view",
                        help="the studio shows this view instead of its panes (charts: the Charts "
                             "screen, g; inspect: the Inspect screen after its first pass, idle)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    preset = args.preset or ("nano" if args.quick else "demo")
    size = tuple(int(n) for n in args.size.lower().split("x"))
    steps = args.steps or (60 if args.quick else 150)
    skip = max(5, steps // 6)  # leave out start-up and the first frames
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        # Headless and studio runs alternate, so the machine's drift hits both alike.
        bases, studios, ui_shares = [], [], []
        for turn in range(args.repeats):
            headless(root / f"headless{turn}", preset, steps)
            bases.append(tokens_per_s(root / f"headless{turn}", skip))
            ui_shares.append(with_studio(root / f"studio{turn}", preset, steps, size, args.open_view))
            studios.append(tokens_per_s(root / f"studio{turn}", skip))
        chat = with_chat(root / "chat", preset, steps)
        base, studio = statistics.median(bases), statistics.median(studios)
        during_chat = tokens_per_s(root / "chat", skip)
    result = {"preset": preset, "steps": steps, "repeats": args.repeats, "size": args.size, "open": args.open_view,
              "headless_runs": [round(b, 1) for b in bases], "studio_runs": [round(x, 1) for x in studios],
              "headless_tokens_per_s": round(base, 1),
              "studio_tokens_per_s": round(studio, 1), "ratio": round(studio / base, 3),
              "ui_thread_cpu": round(statistics.median(ui_shares), 4),
              "tokens_per_s_while_chatting": round(during_chat, 1),
              "chat_ratio": round(during_chat / base, 3), "chat_tokens_generated": chat["tokens"]}
    print(json.dumps(result), flush=True)
    report("tui", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
