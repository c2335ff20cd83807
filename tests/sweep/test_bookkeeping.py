"""Sweep bookkeeping: folders that cannot collide, parallel jobs on a cold cache, the exit status and the
study table at the end of a multirun, each job's W&B run in the multirun's group."""

import json
import os
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF, REPO, wandb_offline_records, wandb_records_of
from splade_peft.config import job_folder_name, sweep_folder
from splade_peft.sweep.callbacks import unfinished_jobs


def hydra_sweep_dir(*overrides: str) -> str:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.select(compose("config", overrides=list(overrides), return_hydra_config=True), "hydra.sweep.dir")


def test_a_study_on_another_experiment_gets_its_own_folder():
    assert hydra_sweep_dir("+sweep=rank") == "./outputs/sweeps/rank"
    assert hydra_sweep_dir("+sweep=rank", "experiment=smoke") == "./outputs/sweeps/rank-smoke"
    assert sweep_folder("out", None, "2026-01-01_00-00-00", "smoke") == "out/multirun/2026-01-01_00-00-00"


def test_where_files_go_names_neither_the_job_folder_nor_an_axis():
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra_cfg = compose("config", return_hydra_config=True).hydra
    overrides = OverridesParser.create().parse_overrides(["lora.r=4", "paths.cache=/c", "paths.outputs=/o", "paths.shared_data=/s"])
    assert get_overrides_dirname(overrides, list(hydra_cfg.job.config.override_dirname.exclude_keys), ",", "=") == "lora.r=4"


def test_a_slash_in_an_override_value_stays_in_one_job_folder():
    assert job_folder_name("data.path=/data/beir/scifact,lora.r=4") == "data.path=%2Fdata%2Fbeir%2Fscifact,lora.r=4"
    assert job_folder_name("eval.k=50%") == "eval.k=50%25"  # escaping stays reversible


def test_a_study_runs_on_the_experiment_its_file_names():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        study = compose("config", overrides=["+sweep=losses_x_negatives"], return_hydra_config=True)
        smoke = compose("config", overrides=["+sweep=losses_x_negatives", "experiment=smoke"], return_hydra_config=True)
    assert (study.hydra.runtime.choices.experiment, study.data.name) == ("scifact_local", "scifact")
    assert smoke.hydra.runtime.choices.experiment == "smoke"  # SWEEP_SCALE=smoke still wins


def test_only_the_jobs_this_multirun_launched_count_as_its_failures(tmp_path):
    for name, age_s in (("lora.r=0", 3600), ("lora.r=-1", 0), ("lora.r=2", 0)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        status = "completed" if name == "lora.r=2" else "failed"
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status}))
        written = time.time() - age_s
        os.utime(tmp_path / name / ".hydra" / "overrides.yaml", (written, written))
    # lora.r=0 failed in an earlier multirun of this folder that this one did not relaunch
    assert unfinished_jobs(tmp_path, started=time.time() - 60) == ["lora.r=-1"]
    assert unfinished_jobs(tmp_path) == ["lora.r=-1", "lora.r=0"]


GRID = "[query],[value],[no_such_layer]"


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory):
    """Two smoke jobs in parallel on an empty cache (both build the tiny model, the embedded collection, the
    BM25 run and the zero-shot stage at once) and a third that fails once its backbone is loaded (a target module
    the backbone lacks: a value the command line's check cannot refuse)."""
    root = tmp_path_factory.mktemp("parallel")
    sweep_dir = root / "sweep"
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", "experiment=smoke", f"lora.target_modules={GRID}", "hydra/launcher=local_parallel",
         f"hydra.sweep.dir={sweep_dir}"],
        # paths.root (not paths.cache=...): the job folders stay named by the grid alone
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "SPLADE_PEFT_ROOT": str(root)},
    )
    return completed, sweep_dir


@pytest.mark.slow
def test_parallel_jobs_on_a_cold_cache_both_complete(parallel_sweep):
    completed, sweep_dir = parallel_sweep
    for targets in ("[query]", "[value]"):
        results = json.loads((sweep_dir / f"lora.target_modules={targets}" / "results.json").read_text())
        assert results["status"] == "completed", (results.get("error"), completed.stderr[-3000:])


@pytest.mark.slow
def test_a_failed_job_makes_the_multirun_exit_non_zero_with_the_count(parallel_sweep):
    completed, _ = parallel_sweep
    assert completed.returncode == 1
    assert "1 job(s) of the sweep did not complete: lora.target_modules=[no_such_layer]" in completed.stderr


@pytest.mark.slow
def test_the_study_table_is_printed_at_the_end(parallel_sweep):
    completed, sweep_dir = parallel_sweep
    assert f"sweep report: {sweep_dir / 'report.md'}" in completed.stdout
    table = completed.stdout.split("sweep report:")[0]
    assert "BM25" in table and "zero-shot" in table and "| [value]" in table


@pytest.mark.slow
def test_each_job_is_a_wandb_run_of_the_multirun_group_with_its_axes(parallel_sweep):
    _, sweep_dir = parallel_sweep
    [run] = wandb_records_of(wandb_offline_records(sweep_dir / "lora.target_modules=[value]"), "run")
    assert (run.display_name, run.run_group, run.job_type) == ("smoke:lora.target_modules=[value]", "sweep", "train")
    config = {update.key: json.loads(update.value_json) for update in run.config.update}
    assert config["sweep_axes"] == {"lora.target_modules": ["value"]}


@pytest.mark.slow
def test_the_multirun_adds_a_report_run_to_the_same_group(parallel_sweep):
    _, sweep_dir = parallel_sweep
    [run] = wandb_records_of(wandb_offline_records(sweep_dir), "run")  # sweep_dir/wandb: the report's own
    assert (run.job_type, run.run_group) == ("report", "sweep")
