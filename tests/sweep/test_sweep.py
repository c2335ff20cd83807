"""Hydra sweeps as a researcher runs them: grids, failures, re-runs, kills, launchers, Optuna."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def sweep(sweep_dir: Path, *overrides: str, timeout: int = 900, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", "experiment=smoke", "logger=csv", f"hydra.sweep.dir={sweep_dir}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, **popen,
    )


def job_results(sweep_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/results.json"))}


def statuses(sweep_dir: Path) -> dict[str, str]:
    return {job: result["status"] for job, result in job_results(sweep_dir).items()}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path_factory.mktemp("grid")
    return sweep(sweep_dir, "lora.r=1,4", "data.negatives=1,2"), sweep_dir


def test_a_2x2_grid_gives_four_completed_jobs_and_one_report(grid_sweep):
    completed, sweep_dir = grid_sweep
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert statuses(sweep_dir) == {
        "data.negatives=1,lora.r=1": "completed", "data.negatives=1,lora.r=4": "completed",
        "data.negatives=2,lora.r=1": "completed", "data.negatives=2,lora.r=4": "completed",
    }
    rows = list(csv.DictReader((sweep_dir / "sweep_results.csv").open()))
    assert len(rows) == 4 and {row["lora.r"] for row in rows} == {"1", "4"}
    report = (sweep_dir / "report.md").read_text()
    assert "BM25 (reference)" in report and "zero-shot (reference)" in report
    assert list(sweep_dir.glob("plot_*.png"))


def test_trainable_parameters_follow_the_rank(grid_sweep):
    _, sweep_dir = grid_sweep
    results = job_results(sweep_dir)
    assert results["data.negatives=1,lora.r=4"]["params"]["trainable"] == 4 * results["data.negatives=1,lora.r=1"]["params"]["trainable"]


def test_re_running_a_finished_sweep_starts_no_job(grid_sweep):
    _, sweep_dir = grid_sweep
    before = {job: (sweep_dir / job / "results.json").stat().st_mtime_ns for job in statuses(sweep_dir)}
    again = sweep(sweep_dir, "lora.r=1,4", "data.negatives=1,2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 4
    assert before == {job: (sweep_dir / job / "results.json").stat().st_mtime_ns for job in before}


def test_a_failing_grid_point_does_not_take_the_sweep_down(tmp_path):
    # A value the config accepts and the job refuses once the backbone is loaded (an invalid value never starts:
    # the command line's check refuses the whole sweep, tests/cli/test_config.py).
    grid = "lora.target_modules=[query],[no_such_layer]"
    completed = sweep(tmp_path, grid)
    assert completed.returncode == 1 and "1 job(s) of the sweep did not complete: lora.target_modules=[no_such_layer]" \
        in completed.stderr, completed.stderr[-3000:]
    results = job_results(tmp_path)
    assert results["lora.target_modules=[query]"]["status"] == "completed"
    failed = results["lora.target_modules=[no_such_layer]"]
    assert failed["status"] == "failed" and "lora.target_modules" in failed["error"]
    rows = {row["lora.target_modules"]: row for row in csv.DictReader((tmp_path / "sweep_results.csv").open())}
    assert rows["[no_such_layer]"]["status"] == "failed" and rows["[query]"]["status"] == "completed"
    # Failed jobs are rerun only when asked.
    assert sweep(tmp_path, grid).stdout.count("skipped") == 2
    assert sweep(tmp_path, grid, "sweep.rerun_failed=true").stdout.count("skipped") == 1


def test_a_killed_sweep_finishes_every_job_once_when_re_run(tmp_path):
    command = [sys.executable, "-m", "splade_peft", "-m", "experiment=smoke", "logger=csv",
               f"hydra.sweep.dir={tmp_path}", "lora.r=1,2", "trainer.max_steps=30"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while "running" not in statuses(tmp_path).values() and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert "running" in statuses(tmp_path).values()
    resumed = sweep(tmp_path, "lora.r=1,2", "trainer.max_steps=30")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert set(statuses(tmp_path).values()) == {"completed"} and len(statuses(tmp_path)) == 2


@pytest.mark.parametrize("launcher", ["local_parallel", "submitit_local"])
def test_parallel_launchers_run_a_two_job_sweep(tmp_path, launcher):
    completed = sweep(tmp_path, "lora.r=1,2", f"hydra/launcher={launcher}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert statuses(tmp_path) == {"lora.r=1": "completed", "lora.r=2": "completed"}


def test_optuna_search_resumes_from_its_sqlite_study(tmp_path):
    import optuna

    search = ("hparams_search=optuna", "lora.r=choice(1,2)", "optim.lr=tag(log,interval(1e-4,1e-3))", "data.negatives=1")
    first = sweep(tmp_path, *search, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = sweep(tmp_path, *search, "hydra.sweeper.n_trials=1")
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{tmp_path}/optuna.sqlite")
    assert len(study.trials) == 3
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
