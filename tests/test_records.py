"""Write-then-rename: a reader sees the old content or the new, never half of it, and failures leave nothing."""

import pytest

from splade_peft.records import staged


def test_a_staged_file_appears_only_on_success(tmp_path):
    target = tmp_path / "out" / "run.txt"
    with pytest.raises(RuntimeError):
        with staged(target) as staging:
            staging.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with staged(target) as staging:
        staging.write_text("whole")
    assert target.read_text() == "whole"


def test_a_staged_folder_replaces_an_existing_one(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with staged(target, folder=True) as staging:
        (staging / "new.bin").write_text("new")
    assert [path.name for path in tmp_path.iterdir()] == ["index"]
    assert [path.name for path in target.iterdir()] == ["new.bin"]


def test_keep_existing_keeps_what_another_writer_published(tmp_path):
    target = tmp_path / "cache"
    with staged(target, folder=True, keep_existing=True) as staging:
        (staging / "corpus.jsonl").write_text("ours")
        target.mkdir()  # another process published first
        (target / "corpus.jsonl").write_text("theirs")
    assert (target / "corpus.jsonl").read_text() == "theirs" and len(list(tmp_path.iterdir())) == 1
