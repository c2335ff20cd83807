"""A researcher's new idea is one registered function plus one YAML file: here a PEFT method and a ranking loss
are registered by this test module (outside the package), each given a YAML file in a config folder of its own,
and the smoke preset trains with each through `python -m splade_peft plugins=[tests.test_extension]`."""

import csv
import json
import subprocess
import sys

import pytest
import torch.nn.functional as F
from peft import LoraConfig

from splade_peft.errors import ConfigError
from splade_peft.model.config import ADAPTER_METHODS
from splade_peft.training.config import RANKING_LOSSES
from tests.helpers import REPO, composed

PLUGIN = "plugins=[tests.test_extension]"


@ADAPTER_METHODS.register("lora_qv", reads=("r", "alpha", "dropout"))
def lora_on_query_and_value(model, lora_cfg, shared: dict, total_steps: int) -> LoraConfig:
    """LoRA on the attention's query and value projections only (the original LoRA paper's choice)."""
    return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      **{**shared, "target_modules": ["query", "value"]})


@RANKING_LOSSES.register("hinge")
def pairwise_hinge(batch, loss_cfg):
    """The positive must beat each negative of its group by a margin of 1."""
    return F.relu(1 - (batch.student[:, :1] - batch.student[:, 1:])).mean()


def config_folder(tmp_path):
    (tmp_path / "lora").mkdir(parents=True)
    (tmp_path / "lora" / "lora_qv.yaml").write_text("# @package lora\ndefaults:\n  - lora\nmethod: lora_qv\n")
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "hinge.yaml").write_text(
        "# @package loss\ndefaults:\n  - contrastive\nname: hinge\nweights:\n  contrastive: 0.0\n  hinge: 1.0\n")
    return tmp_path


def smoke_job(run_dir, conf, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splade_peft", f"hydra.run.dir={run_dir}", f"hydra.searchpath=[file://{conf}]", PLUGIN,
         "experiment=smoke", "logger=csv", "trainer.max_steps=2", "data.max_queries=30", "data.max_documents=200",
         "data.negatives_source=random", "eval.zero_shot=false", "eval.bm25=false", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


def test_registered_variants_are_options_and_an_unregistered_weight_is_refused():
    cfg = composed(PLUGIN, "lora.method=lora_qv", "+loss.weights.hinge=1.0")
    from splade_peft.config import validate

    validate(cfg)
    with pytest.raises(ConfigError, match="config key 'loss.weights.hnige': 'hnige' is not a registered ranking loss"):
        validate(composed("+loss.weights.hnige=1.0"))


def test_a_plugin_that_does_not_import_is_one_line_naming_the_key():
    from splade_peft.config import validate

    with pytest.raises(ConfigError, match="config key 'plugins': cannot import 'no_such_module'"):
        validate(composed("plugins=[no_such_module]"))


@pytest.mark.slow
def test_the_smoke_preset_trains_with_a_new_adapter_method_and_with_a_new_loss(tmp_path):
    conf = config_folder(tmp_path / "conf")
    adapter_job = smoke_job(tmp_path / "adapter", conf, "lora=lora_qv")
    assert adapter_job.returncode == 0, adapter_job.stderr[-3000:]
    adapter = json.loads((tmp_path / "adapter" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["query", "value"]
    assert json.loads((tmp_path / "adapter" / "results.json").read_text())["status"] == "completed"

    loss_job = smoke_job(tmp_path / "loss", conf, "loss=hinge")
    assert loss_job.returncode == 0, loss_job.stderr[-3000:]
    assert json.loads((tmp_path / "loss" / "results.json").read_text())["status"] == "completed"
    [metrics] = (tmp_path / "loss").rglob("metrics.csv")
    columns = next(csv.reader(metrics.open()))
    assert "train/hinge_loss" in columns and "train/contrastive_loss" not in columns
