"""A job that dies without a word (killed by a signal, as SLURM kills a job out of memory or cancelled) is recorded
as failed by the project's submitit launcher, and the sweep's other jobs and report survive it."""

import json

import pytest

from tests.helpers import submitit_sweep_with_plugin

SMALL_JOB = (
    "experiment=smoke", "eval.bm25=false", "eval.zero_shot=false", "data.negatives_source=random",
    "data.max_queries=8", "data.max_documents=40", "trainer.max_steps=2",
)
# A plugin module (the root key `plugins`) imported as the job validates its config, after its results.json says
# "running": the seed=2 job kills its own process there, as the kernel's OOM killer or scancel would.
KILLER = """
import os, signal
from hydra.core.hydra_config import HydraConfig

try:
    folder = HydraConfig.get().job.override_dirname
except ValueError:  # the command line's check before any job: no job here
    folder = ""
if "seed=2" in folder:
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_killed_job_is_recorded_failed_and_the_sweep_report_is_written(tmp_path):
    completed, sweep_dir = submitit_sweep_with_plugin(tmp_path, "kill_seed_two", KILLER, "seed=1,2", *SMALL_JOB)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "1 job(s) of the sweep did not complete" in completed.stderr
    killed = json.loads(next(sweep_dir.glob("*seed=2*/results.json")).read_text())
    survivor = json.loads(next(sweep_dir.glob("*seed=1*/results.json")).read_text())
    assert killed["status"] == "failed" and killed["error"].startswith("lost: submitit job") and "its log: " in killed["error"], killed.get("error")
    assert "rerun the sweep with sweep.rerun_failed=true" in killed["error"]
    assert survivor["status"] == "completed"
    report = (sweep_dir / "report.md").read_text()
    assert "failed" in report
