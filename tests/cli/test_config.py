"""Every option of every config group composes; bad values fail before any model is loaded."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from splade_peft.config import composition_error, validate
from tests.helpers import CONF, composed
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
