"""The training section's rules between keys, checked by `validate` before any data or model loads: best
checkpoints and early stopping need validation, a mixture trains on one device, and a training job chooses
on the dev split carved from training, neither choosing nor training on a split it evaluates unless
eval.allow_test_selection says so (then recorded as warnings)."""

import pytest

from splade_peft.config import typed, validate
from splade_peft.evaluation.config import allowed_test_selection_warnings
from splade_peft.errors import ConfigError
from splade_peft.training.config import device_count
from tests.helpers import composed

MIXTURE = "+data.mixture.datasets.other={source:embedded,split:test}"
KEEP_BEST = ("eval.validate_every_n_steps=5", "training.keep_best=true")
ON_TEST = ("eval.validation_split=test", *KEEP_BEST)


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


@pytest.mark.parametrize("overrides,key,says", [
    (ON_TEST, "eval.validation_split", "test is a split this job evaluates"),
    (["eval.validation_split=test", "eval.validate_every_n_steps=5", "training.early_stopping_patience=2"],
     "eval.validation_split", "choose on"),
    (["eval.validation_split=test"], "eval.validation_split", "the sweep report"),  # its dev figure would be test's
    (["eval.validation_split=test", "sweep.selects=true"], "eval.validation_split", "hparams_search"),
    (["hparams_search=optuna", "eval.validation_split=test"], "eval.validation_split", "hparams_search"),
    (["+eval.datasets.held={source:embedded,split:validation}", "eval.validation_split=validation"],
     "eval.validation_split", "validation is a split this job evaluates"),
    (["data.train_split=test"], "data.train_split", "test is a split this job also evaluates"),
    (["+eval.datasets.seen={source:embedded,split:train}"], "data.train_split", "train is a split this job also evaluates"),
    (["data.dev.queries=0", *KEEP_BEST], "eval.validation_split", "data.dev.queries=0 carves none"),
    (["data.dev.queries=0", "sweep.selects=true"], "eval.validation_split", "data.dev.queries=0 carves none"),
    (["data.training_file=/x.jsonl", "eval.validate_every_n_steps=5"], "eval.validation_split", "data.training_file"),
])
def test_choosing_or_training_on_an_evaluated_split_is_refused_naming_the_key(overrides, key, says):
    with pytest.raises(ConfigError, match=f"^config key '{key}': ") as refused:
        validate(composed(*overrides))
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("overrides", [
    [*KEEP_BEST, "training.early_stopping_patience=2", "sweep.selects=true"],  # on the carved dev split
    ["hparams_search=optuna"],
    ["data=msmarco_files", *KEEP_BEST],  # MS MARCO's own dev split is evaluated; dev is carved from train
    ["+eval.datasets.held={source:embedded,split:dev}", *KEEP_BEST],  # the collection's dev split is not the carved one
    ["+eval.datasets.other={source:beir,path:/x,split:train}"],  # another collection's train split
    ["data.dev.queries=0"],  # nothing validates or chooses
    ["lora=frozen", "eval.validation_split=test", "data.train_split=test"],  # evaluation only: nothing is chosen
    [*ON_TEST, "data.train_split=test", "eval.allow_test_selection=true"],
])
def test_what_the_selection_rules_allow(overrides):
    validate(composed(*overrides))


def test_the_optuna_preset_says_it_selects():
    assert composed("hparams_search=optuna").sweep.selects and not composed().sweep.selects


def test_allowed_test_selection_is_recorded_as_one_warning_a_choice():
    cfg = composed(*ON_TEST, "data.train_split=test", "eval.allow_test_selection=true")
    validate(cfg)
    warnings = allowed_test_selection_warnings(typed(cfg))
    assert [line.split(":")[0] for line in warnings] == ["eval.validation_split", "data.train_split"]
    assert all("eval.allow_test_selection=true" in line for line in warnings)
    assert allowed_test_selection_warnings(typed(composed(*KEEP_BEST))) == []


@pytest.mark.parametrize("devices,count", [(1, 1), (4, 4), ("2", 2), ([0, 1], 2), ("0,", 1), ("1,3", 2),
                                           (-1, None), ("-1", None), ("auto", None)])
def test_device_count_of_each_form_lightning_takes(devices, count):
    assert device_count(devices) == count
