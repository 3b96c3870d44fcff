"""The screen as text or SVG: for snapshot tests and the README's screenshot (a test helper,
not part of the studio).

``screen_text`` renders exactly what ``App.export_screenshot`` renders, but
as plain text: a snapshot kept as text shows in a review diff which words and
cells moved, where an SVG diff shows only that something did.
"""

from __future__ import annotations

import io
import time

from rich.console import Console
from textual.app import App


async def until(pilot, condition, what: str, deadline_s: float = 180.0) -> None:
    """Let the studio run until ``condition()`` holds; fail naming ``what`` after ``deadline_s``
    (generous: a busy machine is slow, a condition that never holds is a failure)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {deadline_s:.0f} s for {what}")
        await pilot.pause(0.05)


def screen_text(app: App) -> str:
    """The running app's current screen, one line per row, trailing spaces kept."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False,
                      safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


def capture(engine, out_path: str, seconds: float, prompt: str | None = None,
            size: tuple[int, int] = (160, 48), theme: str | None = None) -> None:
    """Watch ``engine`` train for ``seconds``, ask ``prompt``, save the screen as SVG,
    then quit as a user would (checkpoint saved, threads joined)."""
    import asyncio
    from pathlib import Path

    from gemma_tui.app import create_app

    async def session() -> None:
        app = create_app(engine, theme=theme)
        async with app.run_test(size=size) as pilot:
            end = time.monotonic() + seconds
            while time.monotonic() < end and app.training_active:
                await pilot.pause(0.5)
            if prompt:
                app.chat_panel.send(prompt)
                while app.chat_panel.busy:
                    await pilot.pause(0.2)
            await pilot.pause(1.0)  # one more poll: the screen shows the latest step
            Path(out_path).write_text(app.export_screenshot(title="Gemma Studio"),
                                      encoding="utf-8")
            app.shut_down()
            while app.is_running:
                await pilot.pause(0.2)

    asyncio.run(session())


def main(argv: list[str] | None = None) -> int:
    """``python tests/studio_screens.py OUT.svg [--seconds N] [--prompt TEXT] [train flags]``:
    the README's screenshot, from a real run."""
    import argparse

    from gemma_core.cli.train import add_train_arguments, settings_from_args
    from gemma_core.api import TrainingEngine  # serves, as gemma-core train's does

    parser = argparse.ArgumentParser(prog="python tests/studio_screens.py")
    parser.add_argument("out", help="the .svg file to write")
    parser.add_argument("--seconds", type=float, default=180.0, help="training time before the shot")
    parser.add_argument("--prompt", default="ROMEO:", help="a chat prompt to show ('' for none)")
    parser.add_argument("--theme", default=None)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    engine = TrainingEngine(settings_from_args(args))
    engine.start()
    try:
        capture(engine, args.out, args.seconds, args.prompt or None, theme=args.theme)
    finally:
        engine.stop(save=True)
        engine.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
