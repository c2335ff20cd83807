"""Write-then-rename: a reader sees the old content or the new, never half of it, and failures leave nothing; a
stage another job is producing is skipped or waited for, and one whose producer died is produced again."""

import os
import signal
import subprocess
import sys
import time

import pytest

from splade_peft.records import StageBusy, StageStore, staged
from tests.helpers import REPO


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


# --- StageStore: jobs of a sweep that reach the same stage together -------------------------------------------

# Another job of the sweep producing stage `name` of the store at argv[1]: it says so, then waits for argv[2] to
# exist before it finishes (or is killed first).
OTHER_JOB = """
import sys, time
from pathlib import Path
from splade_peft.records import StageStore

def produce(folder):
    print("producing", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    return {"by": "other job"}

StageStore(Path(sys.argv[1])).run("zero_shot", {"model": "m"}, produce)
"""


def other_job(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", OTHER_JOB, str(tmp_path / "store"), str(tmp_path / "go")],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline() == "producing\n"
    return process


def test_a_stage_another_job_is_producing_is_skipped_without_waiting_then_taken_from_the_store(tmp_path):
    store, produced_here = StageStore(tmp_path / "store"), []
    process = other_job(tmp_path)
    started = time.monotonic()
    with pytest.raises(StageBusy):
        store.run("zero_shot", {"model": "m"}, produced_here.append, wait=False)
    assert time.monotonic() - started < 5 and not produced_here
    (tmp_path / "go").touch()
    assert store.run("zero_shot", {"model": "m"}, produced_here.append) == (tmp_path / "store" / "zero_shot",
                                                                           {"by": "other job"})
    assert process.wait(timeout=30) == 0 and not produced_here
    # Complete: no lock is taken, and no job is turned away.
    assert store.run("zero_shot", {"model": "m"}, produced_here.append, wait=False)[1] == {"by": "other job"}


def test_a_stage_whose_producer_was_killed_is_produced_by_the_job_that_waits_for_it(tmp_path):
    store = StageStore(tmp_path / "store")
    process = other_job(tmp_path)
    with pytest.raises(StageBusy):
        store.run("zero_shot", {"model": "m"}, lambda folder: {"by": "this job"}, wait=False)
    process.send_signal(signal.SIGKILL)  # out of memory, cancelled: its lock dies with it
    process.wait(timeout=30)
    assert store.run("zero_shot", {"model": "m"}, lambda folder: {"by": "this job"})[1] == {"by": "this job"}
