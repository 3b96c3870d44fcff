"""How long a browser page of ``gemma-tui serve`` takes to connect: page load to the studio's
first frame, with each stage the page waits for (window.gemmaConnect, in app_index.html).

    python -m bench.browser_connect [--pages 5] [--busy N]

A nano run trains on the CPU while the pages open (the run's own cores are busy, as on the
training machine); ``--busy N`` adds N processes spinning on a core each. Needs Debian's
chromium and playwright (the tests' browser).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cpu_model


def spin() -> None:
    while True:
        pass


def open_pages(base: str, key: str, chromium: str, pages: int) -> list[dict]:
    """Each page signs in with the run's key on the key page (a browser of its own each time)
    and is timed from that form's navigation to the studio's first frame."""
    from playwright.sync_api import sync_playwright

    found = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(pages):
            page = browser.new_context(viewport={"width": 1600, "height": 960}).new_page()
            page.goto(base)
            page.fill("input[name=key]", key)
            page.click("button[type=submit]")
            page.wait_for_function("window.gemmaConnect && window.gemmaConnect.studio !== undefined",
                                   timeout=300_000, polling=100)
            found.append(page.evaluate("window.gemmaConnect"))
            print(found[-1], file=sys.stderr, flush=True)
            page.context.close()
        browser.close()
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core each")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    from gemma_core.data.corpus import bundled_works

    root = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    data = root / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(root / "cache"))
    server = subprocess.Popen([sys.executable, "-m", "gemma_tui", "serve", "--preset", "nano", "--output_dir",
                               str(root / "run"), "--train_dataset_path", str(data), "--device", "cpu",
                               "--max_steps", "1000000", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    try:
        link = next(m.group(1) for m in (re.search(r"open (http://\S+)", line) for line in server.stdout) if m)
        key = (root / "run" / "server.token").read_text().strip()
        for spinner in spinners:
            spinner.start()
        time.sleep(5)  # the run trains at full speed before the first page opens
        found = open_pages(link.split("/?")[0] + "/", key, chromium, args.pages)
    finally:
        for spinner in spinners:
            spinner.terminate()
        server.send_signal(2)
        server.wait(60)
        subprocess.run([sys.executable, "-m", "gemma_core", "control", str(root / "run"), "stop"],
                       capture_output=True, timeout=120)
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "busy_spinners": args.busy,
              "first_frame_ms": [f["studio"] for f in found],
              "median_first_frame_ms": statistics.median(f["studio"] for f in found),
              "median_socket_open_ms": statistics.median(f["socket"] for f in found),
              "median_page_loaded_ms": statistics.median(f["page"] for f in found)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
