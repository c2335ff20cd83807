"""Every config the project ships validates against the schema, and bad keys, types and ranges fail by name."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import splade_peft.config  # noqa: F401  (resolvers)
from splade_peft.config import validate
from tests.helpers import CONF, REPO, composed
from splade_peft.errors import ConfigError

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "paths", "sweep"))
# Options that cannot stand alone: they need a value the user supplies.
NEEDS = {("data", "beir"): ["data.path=/some/beir/folder"], ("data", "hub"): ["data.hub_id=BeIR/scifact"],
         ("encoder", "dense"): ["index=faiss"], ("index", "faiss"): ["encoder=dense"]}



def every_shipped_config() -> list[list[str]]:
    configs = [[]]
    for group in GROUPS:
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            configs.append([f"{group}={option}", *NEEDS.get((group, option), [])])
    configs += [[f"+sweep={p.stem}"] for p in sorted((REPO / "sweeps").glob("*.yaml"))]
    configs += [[f"+sweep={p.stem}", "experiment=smoke"] for p in sorted((REPO / "sweeps").glob("*.yaml"))]
    return configs


@pytest.mark.parametrize("overrides", every_shipped_config(), ids=lambda o: " ".join(o) or "defaults")
def test_every_shipped_config_matches_the_schema(overrides):
    validate(composed(*overrides))


@pytest.mark.parametrize(
    "override,key,says",
    [
        ("+data.negativs=2", "data.negativs", "not a key this project reads"),
        ("+lora.rank=4", "lora.rank", "not a key this project reads"),
        ("+trainer.max_step=5", "trainer.max_step", "not an argument of lightning.Trainer"),
        ("data.batch_size=eight", "data.batch_size", "use an integer"),
        ("lora.use_rslora=3", "lora.use_rslora", "use true/false"),
        ("lora.r=0", "lora.r", "an integer >= 1"),
        ("lora.dropout=1.0", "lora.dropout", "[0, 1)"),
        ("index.quantization=0", "index.quantization", "a number > 0"),
        ("data.negatives=60", "data.negatives", "more than the candidate pool"),
        ("training.checkpoint_every_n_steps=0", "training.checkpoint_every_n_steps", "an integer >= 1"),
        ("data.teacher.scorers=[cross_encoder]", "data.teacher.scorers", "a list of splade, bm25"),
        ("data.teacher.scorers=bm25", "data.teacher.scorers", "use a list"),
    ],
)
def test_bad_keys_types_and_ranges_fail_naming_the_key(override, key, says):
    with pytest.raises(ConfigError, match=f"config key '{key}'") as raised:
        validate(composed(override))
    assert says in str(raised.value)


def test_the_entry_point_rejects_a_bad_config_before_loading_any_model(tmp_path):
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", f"hydra.run.dir={tmp_path}", "+lora.rank=4", "model=hub"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1
    assert "config key 'lora.rank': is not a key this project reads" in completed.stderr
    assert not (tmp_path / "adapter").exists()
