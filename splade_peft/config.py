"""The project's configuration: one dataclass per config group, registered with Hydra, and `validate`.

RULE: adding a config key is one dataclass field plus its default value in the group's YAML file, e.g.

    # splade_peft/training/config.py, class LossConfig      # conf/loss/contrastive.yaml
    label_smoothing: Number = setting(at_least=0, below=1)   label_smoothing: 0.0   # what it does, in a comment

The annotation is the key's type, checked while Hydra composes: `loss.label_smoothing=abc` stops with
"config key 'loss.label_smoothing': 'abc' has the wrong type -- use a number", and `loss.label_smoothng=0.1`
with "is not a key this project reads". `setting(...)` states the range (at_least, above, at_most, below,
one_of, or allows + says), checked by `validate` with the same one-line ConfigError; a rule between
keys goes in the dataclass's `check()`. The value lives only in the YAML file (the field's default stays
`???`), so every option of a group must get it: they start from one file (lora.yaml, splade.yaml, embedded.yaml,
...) or set every key. Nothing else to edit: validation, error messages and the tests read the dataclasses.

Where they live, none importing torch (composing and `--help` stay fast): data/config.py (data),
model/config.py (model, encoder, lora), training/config.py (loss, optim, trainer, training), index/config.py,
evaluation/config.py, and this file (the root: seed, sweep, paths, logger). Their building blocks are in
splade_peft/settings.py. Also:
- a key that names a variant (lora.method, loss.weights.<loss>, encoder.name, encoder.sparsifiers.*.method,
  data.source, index.name) is checked against that concept's registry (splade_peft/registry.py), which its
  implementations fill; an adapter method registers the lora.* keys it reads (`reads=`), and any other lora.*
  key must keep its lora.yaml value;
- trainer.* and logger.* take any other key too: a lightning.Trainer argument, or a WandbLogger / wandb.init
  argument, checked by name and annotated type against those signatures when validating;
- an option that brings keys of its own (encoder=dense, encoder=csr, logger=wandb) is a subclass of the
  group's dataclass, registered by option name (ENCODER_SCHEMAS, LOGGER_SCHEMAS, as /schema/<group>/<option>)
  and named in that option's YAML defaults list (`- /schema/encoder/dense`);
- a mapping of datasets (eval.datasets, data.mixture.datasets) is `entries(DatasetSpec)`, each entry typed
  when validating;
- a key forced in with `+` (`+lora.rank=4`: Hydra adds it whatever the schema) is refused by `validate`,
  before any data or model loads.
Fixed allowed-value tuples (POOLINGS, QUANTIZATIONS, ...) live in these modules; the implementations import them.
A command line that does not compose is reported in one line by splade_peft/preflight.py before Hydra starts.
"""

import inspect
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from splade_peft.data.config import DataConfig
from splade_peft.errors import ConfigError
from splade_peft.evaluation.config import EvalConfig
from splade_peft.index.config import IndexConfig
from splade_peft.model.config import ENCODER_SCHEMAS, EncoderConfig, LoraConfig, ModelConfig
from splade_peft.registry import import_plugins
from splade_peft.settings import (
    Section, check_section, config_error, describe_type, fields_of, library_argument, matches, schema_node, section,
    setting, shown,
)
from splade_peft.training.config import LossConfig, OptimConfig, TrainerConfig, TrainingConfig

OmegaConf.register_new_resolver("basename", lambda path: Path(str(path)).name, replace=True)


def sweep_folder(outputs: str, name: str | None, stamp: str, experiment: str | None = None) -> str:
    """A study from sweeps/ gets a fixed folder, so that re-running it resumes; an ad-hoc -m sweep a dated
    one. The experiment is part of a study's folder: the same grid on two experiments must not share jobs."""
    if not name:
        return f"{outputs}/multirun/{stamp}"
    return f"{outputs}/sweeps/{name}-{experiment.replace('/', '-')}" if experiment else f"{outputs}/sweeps/{name}"


def job_folder_name(override_dirname: str) -> str:
    """A job folder named by its overrides, one folder deep: a `/` in a value (a path) becomes `%2F`."""
    return override_dirname.replace("%", "%25").replace("/", "%2F")


OmegaConf.register_new_resolver("sweep_folder", sweep_folder, replace=True)
OmegaConf.register_new_resolver("job_folder", job_folder_name, replace=True)


# --- the root of the config ------------------------------------------------------------------------------------

LOGGERS = ("wandb", "csv", "none")
SIGNIFICANCE_TESTS = ("randomization", "t")  # sweep.test: the sweep report's paired test over queries


@dataclass
class SweepConfig(Section):
    """Set by the study files in sweeps/ (`python -m splade_peft -m +sweep=rank`)."""

    name: Optional[str] = setting()
    question: Optional[str] = setting()
    metric: str = setting()
    rerun_failed: bool = setting()
    selects: bool = setting()  # the jobs' dev figures choose among them (hparams_search=optuna sets it)
    # The sweep report's protocol (splade_peft/sweep/significance.py):
    control: str = setting()
    family: Optional[list[str]] = setting()
    test: str = setting(one_of=SIGNIFICANCE_TESTS)
    margin: float = setting(at_least=0)
    out_of_domain: Optional[list[str]] = setting()


@dataclass
class PathsConfig(Section):
    root: str = setting()
    cache: str = setting()
    checkpoints: str = setting()
    shared_data: str = setting()
    outputs: str = setting()


@dataclass
class LoggerConfig(Section):
    """logger=csv, logger=none. Keys beyond `name` are W&B's (a study sets logger.group whatever the logger):
    any WandbLogger or wandb.init argument, or a key of logger=wandb."""

    open = True
    names: ClassVar[tuple[str, ...]] = ("csv", "none")

    name: str = setting()

    def check(self, path: str, root) -> None:
        if self.name not in type(self).names:
            fix = f"use logger= one of {', '.join(LOGGERS)}" if self.name not in LOGGERS else f"use logger={self.name}"
            raise ConfigError("logger.name", f"{self.name!r} is not allowed here", fix)

    def check_extra(self, path: str, extra: dict) -> None:
        own = fields_of(WandbLoggerConfig)
        for key, value in extra.items():
            if key in own:
                if not matches(value, own[key].type):
                    raise ConfigError(f"{path}.{key}", f"{shown(key, value)} has the wrong type",
                                      f"use {describe_type(own[key].type)}")
            else:
                library_argument("WandbLogger or wandb.init", f"{path}.{key}", value, wandb_annotations())


@dataclass
class WandbLoggerConfig(LoggerConfig):
    """logger=wandb: a W&B run per job."""

    names: ClassVar[tuple[str, ...]] = ("wandb",)

    project: str = setting()
    group: Optional[str] = setting()
    run_name: Optional[str] = setting()
    job_type: Optional[str] = setting()
    tags: list[str] = setting()
    notes: Optional[str] = setting()
    mode: Optional[str] = setting()


LOGGER_SCHEMAS = {"wandb": WandbLoggerConfig}


@cache
def wandb_annotations() -> dict[str, Any]:
    """The arguments of lightning's WandbLogger and of wandb.init (its **kwargs), with their annotations."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    annotations = {}
    for function in (wandb.init, WandbLogger.__init__):
        try:
            signature = inspect.signature(function, eval_str=True)
        except Exception:  # an annotation naming a class the module only imports for type checkers
            signature = inspect.signature(function)
        for name, parameter in signature.parameters.items():
            if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD:
                annotations[name] = parameter.annotation
    return annotations


@dataclass
class RootConfig(Section):
    """Every key of the composed config (conf/config.yaml's defaults list starts from it: `- schema`)."""

    seed: int = setting()
    plugins: list[str] = setting()
    sweep: SweepConfig = section(SweepConfig)
    training: TrainingConfig = section(TrainingConfig)
    paths: PathsConfig = section(PathsConfig)
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    encoder: EncoderConfig = section(EncoderConfig)
    lora: LoraConfig = section(LoraConfig)
    loss: LossConfig = section(LossConfig)
    optim: OptimConfig = section(OptimConfig)
    trainer: TrainerConfig = section(TrainerConfig)
    index: IndexConfig = section(IndexConfig)
    eval: EvalConfig = section(EvalConfig)
    logger: LoggerConfig = section(LoggerConfig)


# Groups whose options add keys: group -> {option: dataclass}, registered as /schema/<group>/<option>.
VARIANTS = {"encoder": ENCODER_SCHEMAS, "logger": LOGGER_SCHEMAS}


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="schema", node=schema_node(RootConfig))
    for group, options in VARIANTS.items():
        for option, cls in options.items():
            store.store(group=f"schema/{group}", name=option, node=schema_node(cls), package=group)


register_schemas()


# --- validation --------------------------------------------------------------------------------------------------

def validate(cfg: DictConfig) -> RootConfig:
    """The config as checked dataclasses; ConfigError naming the first key whose value is missing, unknown, of
    the wrong type, out of range, or unworkable with another key's."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "is required and has no value", f"set it on the command line, e.g. {missing[0]}=...")
    root = typed(cfg)
    import_plugins(root.plugins)  # before the checks: their variants are names the config may use
    check_section(root, "", root)
    return root


def typed(cfg: DictConfig) -> RootConfig:
    """The config (composed by Hydra, or any mapping of the same keys) as RootConfig's dataclasses, resolved."""
    try:
        merged = OmegaConf.merge(schema_node(RootConfig), OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise config_error(error, RootConfig, variants=VARIANTS) from None


OVERRIDE = re.compile(r"^Error merging override \+*(?P<key>[\w.]+)=(?P<value>.*)$", re.DOTALL)


def composition_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind a failed Hydra composition (an unknown key, a wrong type), when OmegaConf names
    the key; None for other failures (an unknown option: Hydra's message lists the available ones)."""
    cause = error.__cause__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if cause is None:
        return None
    named = re.sub(r"\[[^]]*\]", "", "" if cause.full_key is None else str(cause.full_key))
    override = OVERRIDE.match(str(error))
    if override and not named.startswith(override["key"]):
        named = override["key"]  # OmegaConf checked the value (e.g. a list's item) before placing it
    if not named:
        return None
    given = given_value(override["value"]) if override and override["key"] == named else None
    return override_error(cause, named, given)


def override_error(error: OmegaConfBaseException, key: str, value=None) -> ConfigError:
    """The ConfigError behind OmegaConf refusing `key=value` (an unknown key, a value of the wrong type)."""
    return config_error(error, RootConfig, value=value, key=key, variants=VARIANTS)


def given_value(text: str):
    """An override's value as Hydra reads it (`1.5` a float, `abc` a string), for the error message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"key={text}").value()
    except Exception:  # an override Hydra parsed once parses again; this is only for the message
        return text
