"""A value of the wrong type is reported with its key and the type expected, Lightning's and W&B's keys included."""

import pytest
from hydra.errors import ConfigCompositionException

from tests.helpers import composed, run_cli
from splade_peft.config import composition_error, validate
from splade_peft.errors import ConfigError


def reported(*overrides: str) -> str:
    """The one line a bad config is reported with: a declared key's type at composition, a pass-through
    argument of Lightning or W&B (added with `+`) when the config is validated."""
    try:
        cfg = composed(*overrides)
    except ConfigCompositionException as error:
        return str(composition_error(error))
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    return str(error.value)


@pytest.mark.parametrize("override, message", [
    ("trainer.max_steps=abc", "'trainer.max_steps': 'abc' has the wrong type -- use an integer"),
    ("trainer.precision=1.5", "'trainer.precision': 1.5 has the wrong type"),
    ("trainer.gradient_clip_val=high", "'trainer.gradient_clip_val': 'high' has the wrong type -- use "),
    ("+trainer.limit_val_batches=all", "'trainer.limit_val_batches': 'all' has the wrong type -- use "),
    ("logger.tags=oops", "'logger.tags': 'oops' has the wrong type -- use a list"),
    ("+logger.entitty=me", "'logger.entitty': is not an argument of WandbLogger or wandb.init"),
])
def test_the_key_and_the_expected_type_are_named(override, message):
    assert message in reported("experiment=smoke", override)


@pytest.mark.parametrize("override", ["trainer.devices=auto", "trainer.gradient_clip_val=0.5", "+logger.entity=me"])
def test_values_of_the_right_type_pass(override):
    validate(composed("experiment=smoke", override))


@pytest.mark.slow
def test_a_wrong_trainer_type_stops_the_job_with_one_line_naming_it(tmp_path):
    completed = run_cli(tmp_path, "experiment=smoke", "logger=none", "trainer.max_steps=abc")
    assert completed.returncode == 1
    [line] = [line for line in completed.stderr.splitlines() if line.startswith("splade_peft:")]
    assert "trainer.max_steps" in line and "an integer" in line
