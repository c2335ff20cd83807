"""Every option of every config group composes; bad values fail before any model is loaded."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from splade_peft.config import composition_error, validate
from splade_peft.preflight import Grid, command_line_problem
from tests.helpers import CONF, REPO, composed, run_cli
from splade_peft.errors import ConfigError

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))



def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    overrides = [f"{'+' if group == 'sweep' else ''}{group}={option}"]
    if option == "beir":
        overrides.append("data.path=/some/beir/folder")
    if option == "hub" and group == "data":
        overrides.append("data.hub_id=BeIR/scifact")
    if (group, option) == ("sweep", "interpolation"):  # it scales a given job's adapter
        overrides.append("model.adapter=/a/lora/job")
    if (group, option) in (("encoder", "dense"), ("index", "faiss")):  # the dense encoder and its index go together
        overrides.append("index=faiss" if group == "encoder" else "encoder=dense")
    cfg = composed(*overrides)
    if group not in ("experiment", "sweep", "hparams_search"):
        assert group in cfg
    OmegaConf.resolve(cfg)
    validate(cfg)


def test_each_group_is_packaged_under_its_own_name():
    for group in GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            # Presets that touch several groups at once are global: experiments, studies, searches.
            expected = "_global_" if group in ("experiment", "sweep", "hparams_search") else group
            assert path.read_text().startswith(f"# @package {expected}"), path


def test_user_facing_keys_exist():
    cfg = composed()
    for key in ("lora.r", "lora.alpha", "lora.dropout", "lora.use_rslora", "lora.target_modules", "data.path",
                "data.negatives", "loss.lambda_d", "loss.lambda_q", "loss.warmup_steps", "index.quantization"):
        assert OmegaConf.select(cfg, key, default="absent") != "absent", key


def test_defaults_are_rslora_and_valid():
    cfg = composed()
    validate(cfg)
    assert cfg.lora.use_rslora and cfg.model.name == "splade-2l" and cfg.data.source == "embedded"


def test_unknown_key_or_wrong_type_is_rejected_at_composition():
    with pytest.raises(ConfigCompositionException, match="lora.rank"):
        composed("lora.rank=4")
    with pytest.raises(ConfigCompositionException) as raised:
        composed("lora.r=four")
    assert str(composition_error(raised.value)) == "config key 'lora.r': 'four' has the wrong type -- use an integer"


def test_unknown_option_lists_the_available_ones():
    with pytest.raises(ConfigCompositionException, match="lora/fancy"):
        composed("lora=fancy")


@pytest.mark.parametrize(
    "override,key",
    [("lora.r=0", "lora.r"), ("lora.dropout=1.0", "lora.dropout"), ("index.quantization=0", "index.quantization"),
     ("data.negatives=-1", "data.negatives"), ("data.negatives_source=dense", "data.negatives_source")],
)
def test_out_of_range_values_name_the_key_and_the_allowed_range(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'.*use "):
        validate(composed(override))


def test_beir_without_a_path_asks_for_data_path():
    with pytest.raises(ConfigError, match="data.path"):
        validate(composed("data=beir"))


GPU_REFUSAL = "config key 'trainer.accelerator': is gpu and no CUDA device is visible here -- use trainer=cpu"
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="shows the refusal where no GPU is visible")


@no_gpu_here
def test_a_job_or_sweep_that_asks_for_a_missing_gpu_stops_in_one_line_before_any_job(tmp_path):
    single = run_cli(tmp_path / "job", "trainer=gpu")
    sweep = run_cli(tmp_path / "unused", "-m", "trainer=gpu", "lora.r=1,4", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    for completed in (single, sweep):
        assert completed.returncode == 1 and completed.stderr.startswith(f"splade_peft: {GPU_REFUSAL}"), completed.stderr[-2000:]
        assert len(completed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "job").exists() and not (tmp_path / "sweep").exists()


@no_gpu_here
def test_a_job_the_preflight_did_not_see_refuses_the_missing_gpu_before_any_stage(tmp_path):
    """A job on a SLURM node (or started with HYDRA_FULL_ERROR=1) checks its own machine first: no data loaded, no
    BM25 index built in the cache."""
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", f"hydra.run.dir={tmp_path / 'job'}", "trainer=gpu", "logger=csv",
         f"paths.cache={tmp_path / 'cache'}"], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert completed.returncode == 1
    result = json.loads((tmp_path / "job" / "results.json").read_text())
    assert result["status"] == "failed" and result["error"].startswith(f"ConfigError: {GPU_REFUSAL}")
    assert "data" not in result and not (tmp_path / "cache").exists()


@no_gpu_here
def test_each_value_of_a_sweep_is_checked_for_its_gpu_and_slurm_jobs_on_their_node():
    assert command_line_problem(["-m", "trainer=cpu,gpu"], CONF).startswith(GPU_REFUSAL)
    assert command_line_problem(["trainer=gpu", "trainer.accelerator=auto"], CONF) is None  # auto: the CPU fallback
    # The login node a SLURM sweep starts from has no GPU of its own: only sbatch is checked there.
    assert "sbatch" in command_line_problem(["-m", "trainer=gpu", "hydra/launcher=slurm"], CONF)


def test_a_slurm_launcher_asks_for_its_gpus_once(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # a login node: sbatch is there
    twice = ["-m", "hydra/launcher=slurm_h100", "hydra.launcher.gres=gpu:h100:1"]
    assert command_line_problem(twice, CONF).startswith("config key 'hydra.launcher.gres': gpu:h100:1 asks for GPUs beside")
    assert command_line_problem([*twice, "hydra.launcher.gpus_per_node=null"], CONF) is None
    assert command_line_problem(["-m", "hydra/launcher=slurm_h100", "hydra.launcher.constraint=h100"], CONF) is None


def test_every_grid_point_is_checked_before_any_job_starts(tmp_path):
    """A value out of range, or a combination no single value shows (4-bit weights cast by bf16-true), stops the
    whole sweep in one line naming the key: no job folder, no traceback."""
    assert command_line_problem(["-m", "lora.r=4,0"], CONF).startswith("config key 'lora.r': 0 is not allowed")
    combined = ["-m", "lora.quantization=null,4bit", "trainer.precision=32-true,bf16-true"]
    assert command_line_problem(combined, CONF).startswith("config key 'trainer.precision': bf16-true with lora.quantization=4bit")
    assert command_line_problem(["-m", "lora.r=4,four"], CONF) == "config key 'lora.r': 'four' has the wrong type -- use an integer"
    assert command_line_problem(["-m", "lora=qlora,dora", "lora.r=4,8", "seed=1,2"], CONF) is None
    sweep = run_cli(tmp_path / "unused", "-m", "experiment=smoke", "lora.r=4,0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 1 and sweep.stderr.startswith("splade_peft: config key 'lora.r'"), sweep.stderr[-2000:]
    assert len(sweep.stderr.strip().splitlines()) == 1 and not (tmp_path / "sweep").exists()


def test_a_grid_too_large_to_check_point_by_point_checks_each_value_once():
    grid = Grid(["lora=qlora,dora", "lora.r=" + ",".join(map(str, range(1, 200))), "seed=1,2,3,4,5,6"], CONF)
    compositions = list(grid.compositions())
    assert len(compositions) == 1 + 1 + 198 + 5 and all(points == [{}] for _, points in compositions)
