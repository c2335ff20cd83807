"""The training section's rules between keys, checked by `validate` before any data or model loads: best
checkpoints and early stopping need validation, and a mixture trains on one device."""

import pytest

from splade_peft.config import validate
from splade_peft.errors import ConfigError
from splade_peft.training.config import device_count
from tests.helpers import composed

MIXTURE = "+data.mixture.datasets.other={source:embedded,split:test}"


@pytest.mark.parametrize("overrides,key", [
    (["training.keep_best=true"], "eval.validate_every_n_steps"),
    (["training.early_stopping_patience=2"], "eval.validate_every_n_steps"),
    ([MIXTURE, "trainer.devices=2"], "data.mixture"),
    ([MIXTURE, "trainer.devices=[0,1]"], "data.mixture"),
    ([MIXTURE, "trainer.devices=auto"], "data.mixture"),
    ([MIXTURE, "+trainer.num_nodes=2"], "data.mixture"),
])
def test_rules_between_keys_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"^config key '{key}': "):
        validate(composed("eval.validate_every_n_steps=0", *overrides))


@pytest.mark.parametrize("overrides", [
    ["eval.validate_every_n_steps=5", "training.keep_best=true", "training.early_stopping_patience=2"],
    [MIXTURE, "trainer.devices=1"],
    [MIXTURE, "trainer.devices=[0]"],
    ["trainer.devices=2"],
])
def test_what_the_rules_allow(overrides):
    validate(composed(*overrides))


@pytest.mark.parametrize("devices,count", [(1, 1), (4, 4), ("2", 2), ([0, 1], 2), ("0,", 1), ("1,3", 2),
                                           (-1, None), ("-1", None), ("auto", None)])
def test_device_count_of_each_form_lightning_takes(devices, count):
    assert device_count(devices) == count
