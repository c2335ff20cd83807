"""The zero-shot row is computed once per sweep: a job that finds another job producing it trains meanwhile and
takes it from the store after training, or computes it then if that job died."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

SMALL_JOB = (
    "experiment=smoke", "eval.bm25=false", "eval.zero_shot=true", "data.negatives_source=random",
    "data.max_queries=8", "data.max_documents=40", "trainer.max_steps=2",
)
# Runs the real job. As it reaches the zero-shot stage another process takes the stage's lock (another job of the
# sweep producing it), and is killed once the job has moved on (out of memory, cancelled). Events go to a file.
ANOTHER_JOB_DIES = """
import runpy, signal, subprocess, sys
from pathlib import Path
import splade_peft.pipeline as pipeline
from splade_peft.records import StageBusy, StageStore

HOLD = ("import sys, time; from pathlib import Path; from splade_peft.records import locked\\n"
        "with locked(Path(sys.argv[1])):\\n    print('held', flush=True); time.sleep(600)")
events, real_run, real_fit = Path({events!r}), StageStore.run, pipeline.fit

def note(event):
    with events.open("a") as file:
        file.write(event + "\\n")

def run(self, name, inputs, produce, wait=True):
    if self.root.name != "zero_shot":
        return real_run(self, name, inputs, produce, wait)
    if not wait:
        other = subprocess.Popen([sys.executable, "-c", HOLD, str(self.root / name)], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline() == "held\\n"
        try:
            return real_run(self, name, inputs, produce, wait)
        except StageBusy:
            note("busy")
            raise
        finally:
            other.send_signal(signal.SIGKILL)
            other.wait()
    return real_run(self, name, inputs, lambda folder: (note("produced"), produce(folder))[1], wait)

def fit(*args, **kwargs):
    note("fit")
    return real_fit(*args, **kwargs)

StageStore.run, pipeline.fit = run, fit
runpy.run_module("splade_peft", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_a_zero_shot_row_another_job_holds_is_not_waited_for_and_is_computed_after_training_if_that_job_died(tmp_path):
    events = tmp_path / "events.txt"
    completed = subprocess.run(
        [sys.executable, "-c", ANOTHER_JOB_DIES.format(events=str(events)), f"hydra.run.dir={tmp_path / 'job'}",
         f"paths.cache={tmp_path / 'cache'}", *SMALL_JOB],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert events.read_text().split() == ["busy", "fit", "produced"]
    result = json.loads((tmp_path / "job" / "results.json").read_text())
    (dataset,) = result["data"]["eval"]
    assert result["references"]["zero_shot"][dataset]["metrics"]["ndcg@10"] >= 0
