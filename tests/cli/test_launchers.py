"""Hydra launchers: the SLURM presets requeue and ask for what a GPU job needs; a sweep through submitit
runs its jobs (here with the corpus encoded in shards, as on a cluster)."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import CONF, REPO


def launcher(name: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher


@pytest.mark.parametrize("name", ["slurm", "slurm_h100"])
def test_slurm_presets_requeue_and_ask_for_a_gpu(name):
    preset = launcher(name)
    assert preset._target_.endswith("SlurmLauncher")
    assert preset.max_num_timeout > 0 and preset.gpus_per_node == 1 and preset.cpus_per_task >= 8
    assert preset.mem_gb >= 64 and preset.timeout_min >= 720 and "additional_parameters" in preset


@pytest.mark.slow
def test_a_submitit_local_sweep_with_sharded_encoding_completes_both_jobs(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", "experiment=smoke", "logger=csv", "lora.r=1,2",
         "hydra/launcher=submitit_local", "index.encode_shards=2", "eval.zero_shot=false", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    statuses = [json.loads(path.read_text())["status"] for path in tmp_path.glob("*/results.json")]
    assert statuses == ["completed", "completed"]
    for job in tmp_path.glob("*lora.r=*"):
        assert sorted(p.name for p in job.glob("eval/.encoding/*/vectors/*")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
