"""One writer per run folder and per token cache: a second writer is refused (or, for a cache,
waits), the lock dies with its process, and readers never need it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gemma_core.data.corpus import bundled_works
from gemma_core.errors import UserError
from gemma_core.folder_lock import FolderBusy, FolderLock


def train_command(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gemma_core", "train", "--preset", "nano", "--output_dir", str(out),
            "--train_dataset_path", str(data), "--device", "cpu", "--dtype", "fp32", *extra]


def wait_for_steps(out: Path, steps: int, process: subprocess.Popen, timeout: float = 120) -> None:
    log = out / "training_log.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    raise AssertionError(f"no step {steps} within {timeout} s")


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    return path


def test_a_second_writer_is_refused_naming_the_first_and_the_lock_dies_with_it(tmp_path, data):
    out = tmp_path / "run"
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    first = subprocess.Popen(train_command(out, data, "--max_steps", "100000", "--save_steps", "5"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_steps(out, 6, first)
        for extra in (["--resume"], ["--overwrite"], []):
            second = subprocess.run(train_command(out, data, "--max_steps", "50", *extra), capture_output=True,
                                    text=True, timeout=120, env=env)
            assert second.returncode == 2, second.stderr
            line = second.stderr.strip()
            assert line.startswith("error: ") and "\n" not in line
            assert f"another run is writing here (process {first.pid} on" in line and "started" in line
        # Nothing else writes into a live run either: not an export, an import or a tokenizer.
        hf = tmp_path / "hf"
        for argv in (["export-hf", "--checkpoint", str(out), "--output", str(out), "--overwrite"],
                     ["import-hf", str(hf), "--output", str(out), "--overwrite"],
                     ["tokenizer", "train", "--input", str(data), "--vocab_size", "300", "--output",
                      str(out / "model.safetensors"), "--overwrite"]):
            if argv[0] == "import-hf" and not hf.exists():
                exported = subprocess.run([sys.executable, "-m", "gemma_core", "export-hf", "--checkpoint",
                                           str(out), "--output", str(hf)], capture_output=True, text=True,
                                          timeout=240, env=env)
                assert exported.returncode == 0, exported.stderr
            weights = (out / "model.safetensors").read_bytes()
            refused = subprocess.run([sys.executable, "-m", "gemma_core", *argv], capture_output=True, text=True,
                                     timeout=240, env=env)
            assert refused.returncode == 2, (argv, refused.stderr)
            assert f"another run is writing here (process {first.pid} on" in refused.stderr, refused.stderr
            assert (out / "model.safetensors").read_bytes() == weights or first.poll() is None
        # Readers need no lock.
        read = subprocess.run([sys.executable, "-m", "gemma_core", "generate", "--checkpoint", str(out),
                               "--prompt", "KING", "--max_new_tokens", "3"], capture_output=True, text=True,
                              timeout=120, env=env)
        assert read.returncode == 0, read.stderr
        assert first.poll() is None  # the first run never noticed
        steps_before_kill = len((out / "training_log.jsonl").read_text().splitlines())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    resumed = subprocess.run(train_command(out, data, "--resume", "--max_steps", "12"), capture_output=True,
                             text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr  # the OS freed the lock with its holder
    steps = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps_before_kill >= 6 and steps == sorted(set(steps)) and steps[-1] >= 12


def test_a_refused_start_in_a_new_folder_leaves_nothing_behind(tmp_path, capsys):
    from gemma_core.cli import main

    code = main(["train", "--resume", "--output_dir", str(tmp_path / "fresh")])
    assert code == 2 and not (tmp_path / "fresh").exists()


def test_the_lock_names_its_holder_and_waits_when_asked(tmp_path):
    holder = FolderLock(tmp_path / "folder")
    holder.acquire()
    with pytest.raises(FolderBusy, match=f"process {os.getpid()} on"):
        FolderLock(tmp_path / "folder").acquire()
    holder.release()
    again = FolderLock(tmp_path / "folder")
    again.acquire()  # free again once released
    again.release()


def test_a_folder_that_cannot_hold_a_lock_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        FolderLock(blocker / "run").acquire()


BUILD = """
import sys
from gemma_core.data.token_cache import build_token_cache
from gemma_core.tokenizers.tokenizer import load_tokenizer
shards = build_token_cache(sys.argv[1], load_tokenizer("gpt2"), cache_dir=sys.argv[2])
print(shards.n_tokens, shards.directory)
"""


def test_two_runs_tokenizing_one_corpus_at_once_end_with_one_valid_cache(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(w.text for w in bundled_works()), encoding="utf-8")  # ~5 MB: seconds
    builders = [subprocess.Popen([sys.executable, "-c", BUILD, str(corpus), str(tmp_path / "cache")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=300) for b in builders]
    assert all(b.returncode == 0 for b in builders), outputs
    assert outputs[0][0] == outputs[1][0]  # the same tokens, in the same cache
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(folders) == 1
    assert sorted(p.name for p in folders[0].iterdir()) == [".lock", "meta.json", "tokens.bin"]


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    from gemma_core.cli import main

    out = tmp_path / "run"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (out / ".lock").symlink_to(precious)
    assert main(["train", "--preset", "nano", "--output_dir", str(out), "--max_steps", "3", "--device",
                 "cpu"]) == 2
    assert "is a symbolic link, not this folder's lock file" in capsys.readouterr().err
    assert precious.read_text() == "mine"


@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["new", "overwrite"])
def test_a_folder_of_someone_elses_files_is_never_a_run_to_replace(flags, tmp_path, capsys):
    from gemma_core.cli import main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"app": "my editor settings"}')
    (folder / "samples.jsonl").write_text("my notes\n")
    assert main(["train", "--preset", "nano", "--output_dir", str(folder), "--max_steps", "3",
                 "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert "holds files that are not a run's (config.json)" in err and "choose another --output_dir" in err
    assert (folder / "config.json").read_text() == '{"app": "my editor settings"}'
    assert (folder / "samples.jsonl").read_text() == "my notes\n"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "samples.jsonl"]


def test_a_run_never_starts_among_other_files(tmp_path, capsys):
    from gemma_core.cli import main

    (tmp_path / "thesis.tex").write_text("chapter one")
    assert main(["train", "--preset", "nano", "--output_dir", str(tmp_path), "--max_steps", "3",
                 "--device", "cpu", "--overwrite"]) == 2
    assert "holds files that are not a run's (thesis.tex" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()
