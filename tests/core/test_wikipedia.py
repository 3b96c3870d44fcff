"""Specification of the Wikipedia export; a stand-in replaces Hugging Face, never the network."""

from __future__ import annotations

import builtins
import json
import re

import pytest

from gemma_core.data import DataOptions, iter_documents
from gemma_core.data.wikipedia import export_wikipedia, wikipedia_splits
from gemma_core.errors import UserError


class FakeHub:
    """Stands in for ``datasets.load_dataset``: article i has id str(i) and text 'Article i ...'."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, config, split):
        self.calls.append((name, config, split))
        start, stop = map(int, re.fullmatch(r"train\[(\d+)?:(\d+)\]", split).groups(default="0"))
        return [{"id": str(i), "url": f"https://en.wikipedia.org/wiki?curid={i}",
                 "title": f"Title {i}", "text": f"Article {i} – ünïcode text."}
                for i in range(start, stop)]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_reproduces_the_original_sampling(tmp_path):
    hub = FakeHub()
    exported = export_wikipedia(tmp_path / "wiki", load_dataset=hub)
    assert hub.calls == [("wikimedia/wikipedia", "20231101.en", "train[:10000]"),
                         ("wikimedia/wikipedia", "20231101.en", "train[10000:11000]"),
                         ("wikimedia/wikipedia", "20231101.en", "train[81000:82000]")]
    assert [(e.name, e.path.name, e.n_documents) for e in exported] == [
        ("train", "train.jsonl", 10_000), ("val", "val.jsonl", 1_000), ("test", "test.jsonl", 1_000)]
    test_rows = read_jsonl(tmp_path / "wiki" / "test.jsonl")
    assert test_rows[0] == {"id": "81000", "title": "Title 81000",
                            "text": "Article 81000 – ünïcode text."}
    assert not list((tmp_path / "wiki").glob(".*"))  # no temporary files left behind


def test_exported_files_feed_the_data_pipeline(tmp_path):
    export_wikipedia(tmp_path, n_train=3, n_val=2, n_test=1, load_dataset=FakeHub())
    assert list(iter_documents([tmp_path / "val.jsonl"], DataOptions())) == [
        "Article 3 – ünïcode text.", "Article 4 – ünïcode text."]


def test_sizes_generalise_and_must_not_reach_the_test_articles():
    assert wikipedia_splits(5, 7, 2) == {"train": "train[:5]", "val": "train[5:12]",
                                         "test": "train[81000:81002]"}
    with pytest.raises(UserError, match="--train 80000 plus --val 1001 exceeds 81000"):
        wikipedia_splits(80_000, 1_001, 10)
    with pytest.raises(UserError, match="--val 0"):
        wikipedia_splits(10, 0, 10)


def test_missing_datasets_package_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(UserError, match=r"pip install 'gemma-studio\[wikipedia\]'"):
        export_wikipedia(tmp_path)


@pytest.mark.parametrize("error", [ConnectionError("Couldn't reach the Hub"),
                                   OSError("Name or service not known")])
def test_network_failure_is_one_line_asking_for_hugging_face_access(tmp_path, error):
    def offline(*args, **kwargs):
        raise error

    with pytest.raises(UserError) as caught:
        export_wikipedia(tmp_path / "out", load_dataset=offline)
    message = str(caught.value)
    assert "needs network access to Hugging Face" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written when the download fails


def test_a_failed_later_split_leaves_earlier_files_untouched(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "old"}\n', encoding="utf-8")
    hub = FakeHub()

    def flaky(name, config, split):
        if split.startswith("train[81000"):
            raise ConnectionError("connection reset")
        return hub(name, config, split)

    with pytest.raises(UserError, match="network access"):
        export_wikipedia(tmp_path, n_train=2, n_val=1, n_test=1, load_dataset=flaky, overwrite=True)
    assert read_jsonl(tmp_path / "train.jsonl") == [{"text": "old"}]


def test_existing_files_are_replaced_only_when_asked_and_never_as_a_mixed_set(tmp_path):
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.jsonl").write_text(f'{{"text": "old {name}"}}\n', encoding="utf-8")
    with pytest.raises(UserError, match="already holds train.jsonl, val.jsonl, test.jsonl; pass --overwrite"):
        export_wikipedia(tmp_path, n_train=2, n_val=1, n_test=1, load_dataset=FakeHub())
    hub = FakeHub()

    def val_without_text(name, config, split):
        rows = hub(name, config, split)
        return [{"id": "1"}] if split == "train[2:3]" else rows

    with pytest.raises(UserError, match="row 1 has no text"):
        export_wikipedia(tmp_path, n_train=2, n_val=1, n_test=1, load_dataset=val_without_text, overwrite=True)
    for name in ("train", "val", "test"):  # all three old files, none new
        assert read_jsonl(tmp_path / f"{name}.jsonl") == [{"text": f"old {name}"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    export_wikipedia(tmp_path, n_train=2, n_val=1, n_test=1, load_dataset=FakeHub(), overwrite=True)
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 2


def test_a_failure_inside_the_datasets_library_is_one_line(tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("Feature type 'List' not found")

    with pytest.raises(UserError, match="the datasets library could not load it .ValueError: Feature type"):
        export_wikipedia(tmp_path / "out", load_dataset=broken)
