"""The README's "Use it from Python" example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the section has a Python example"
    return "\n".join(blocks)


def test_the_python_example_in_the_readme_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEMMA_STUDIO_CACHE", str(tmp_path / "cache"))
    exec(compile(python_example(), str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert re.search(r"step 40: \d\.\d{3} bits per byte", printed)
    assert re.search(r"validation loss \d+\.\d{3}", printed)
    assert "stopped" in printed and (tmp_path / "runs" / "nb" / "checkpoint" / "state.json").is_file()
