"""A sweep (-m) whose jobs train on two processes (gloo on CPU): each job's second process trains that job's grid
point beside rank zero, and the sweep folder holds one folder per grid point, every file written by rank zero."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

GRID = (1, 4)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_each_job_of_a_ddp_sweep_trains_its_own_grid_point_on_both_processes(tmp_path):
    sweep, outputs = tmp_path / "sweep", tmp_path / "outputs"
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", "experiment=smoke", "trainer.devices=2",
         f"lora.r={','.join(map(str, GRID))}", "logger=csv", "eval.zero_shot=false", "trainer.max_steps=2",
         f"paths.outputs={outputs}", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, capture_output=True, text=True, timeout=1400,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    jobs = sorted(folder for folder in sweep.iterdir() if folder.is_dir() and (folder / ".hydra").is_dir())
    assert len(jobs) == len(GRID)
    records = [json.loads((job / "results.json").read_text()) for job in jobs]
    assert sorted(record["config"]["lora"]["r"] for record in records) == list(GRID)
    for job, record in zip(jobs, records):
        assert record["status"] == "completed", record.get("error")
        # Both processes trained, and they held the same config: the fit stops before its first step where a
        # process's training fingerprint (lora.r included) differs from rank zero's.
        assert record["training"]["processes"] == 2 and record["training"]["steps"] == 2
        assert f"lora.r={record['config']['lora']['r']}" in job.name
        # Rank zero's Hydra files and log only: the second process wrote no .hydra/ or log of its own.
        assert sorted(p.name for p in job.glob("*.log")) == ["__main__.log"]
        assert sorted(p.name for p in (job / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    # No run folder of a second process anywhere, and no sweep folder started inside a job's.
    assert not outputs.exists()
    assert not [path for job in jobs for path in job.rglob("multirun.yaml")]
