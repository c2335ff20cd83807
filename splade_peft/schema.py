"""Every config key the project reads, with its type: a composed config is checked against this before any
data or model is loaded, so a typo'd key (even one added with `+`) or a wrong type fails naming the key path.

Ranges live in `config.RANGE_CHECKS`; a key added to any config file must be declared here too (the test
`tests/test_schema.py` composes every option of every group, every experiment and every study, and checks).
"""

import fnmatch
import inspect
import types
import typing
from functools import cache

from omegaconf import DictConfig, OmegaConf

from splade_peft.errors import ConfigError

# bool is a subclass of int in Python; a flag given where a number belongs is still an error.
INT, NUMBER, STRING, BOOL, NONE, LIST, MAPPING = "an integer", "a number", "a string", "true/false", "null", "a list", "a mapping"
LIGHTNING_TRAINER = "a Lightning Trainer argument"
WANDB_ARGUMENT = "a WandbLogger / wandb.init argument"
# A Trainer argument's annotation, reduced to the kinds above; a class of Lightning's own (Accelerator,
# timedelta, ...) cannot be given in a YAML file and is left out of the message.
PYTHON_KINDS = {int: INT, float: NUMBER, str: STRING, bool: BOOL, type(None): NONE, list: LIST, dict: MAPPING}

# key path ('*' matches one level) -> the kinds of value allowed
SCHEMA: dict[str, tuple[str, ...]] = {
    "seed": (INT,),
    "sweep.name": (STRING, NONE), "sweep.question": (STRING, NONE), "sweep.metric": (STRING,),
    "sweep.rerun_failed": (BOOL,),
    "training.checkpoint_every_n_steps": (INT,), "training.max_nonfinite_batches": (INT,),
    "training.keep_best": (BOOL,), "training.early_stopping_patience": (INT,),
    "paths.*": (STRING,),
    "data.name": (STRING,), "data.source": (STRING,), "data.path": (STRING, NONE), "data.hub_id": (STRING, NONE),
    "data.train_split": (STRING,), "data.eval_split": (STRING,), "data.unknown_ids": (STRING,),
    "data.negatives": (INT,), "data.negatives_source": (STRING,), "data.negatives_depth": (INT,),
    "data.batch_size": (INT,), "data.max_queries": (INT, NONE), "data.max_documents": (INT, NONE),
    "data.num_workers": (INT,), "data.pin_memory": (STRING, BOOL), "data.prefetch_factor": (INT,),
    "data.persistent_workers": (BOOL,),
    "data.hard_negative_systems": (LIST, NONE), "data.negatives_file": (STRING, NONE), "data.sampling": (STRING,),
    "data.training_file": (STRING, NONE), "data.training_layout": (STRING,),
    "data.mixture": (MAPPING,), "data.mixture.datasets": (MAPPING,), "data.mixture.sampling": (STRING,),
    "data.mixture.datasets.*": (MAPPING, NUMBER, STRING), "data.mixture.datasets.*.*": (STRING, NUMBER, BOOL, NONE),
    "data.teacher": (MAPPING,), "data.teacher.allow_pickle": (BOOL,), "data.teacher.checkpoint": (STRING, NONE),
    "data.teacher.ensemble": (STRING,), "data.teacher.files": (LIST,), "data.teacher.from_training_file": (BOOL,),
    "data.teacher.missing": (STRING,), "data.teacher.scorers": (LIST,),
    "data.teacher.weights": (LIST,), "data.teacher.weights.*": (NUMBER,),
    "model.name": (STRING,), "model.name_or_path": (STRING, NONE), "model.trust_remote_code": (BOOL,),
    "model.random_init": (MAPPING, NONE), "model.random_init.*": (NUMBER,),
    "model.random_init.architecture": (STRING,),
    "model.query_max_length": (INT,), "model.doc_max_length": (INT,), "model.adapter": (STRING, NONE), "model.num_layers": (INT, NONE),
    "encoder.name": (STRING,), "encoder.pooling": (STRING,), "encoder.bidirectional": (BOOL,),
    "encoder.sparsifiers.*.method": (STRING,), "encoder.sparsifiers.*.k": (INT,),
    "encoder.sparsifiers.*.threshold": (NUMBER,), "encoder.sparsifiers.*.scale": (NUMBER,),
    "encoder.sparsifiers.*.learned": (BOOL,),
    "encoder.normalize": (BOOL,), "encoder.temperature": (NUMBER,),
    "encoder.query_prefix": (STRING, NONE), "encoder.document_prefix": (STRING, NONE),
    "encoder.csr": (MAPPING,), "encoder.csr.latent_dim": (INT,), "encoder.csr.k": (INT,),
    "encoder.csr.reconstruction_weight": (NUMBER,),
    "lora.method": (STRING,), "lora.r": (INT,), "lora.alpha": (NUMBER,), "lora.dropout": (NUMBER,),
    "lora.use_rslora": (BOOL,), "lora.use_dora": (BOOL,), "lora.bias": (STRING,),
    "lora.target_modules": (LIST, STRING, NONE), "lora.target_modules.*": (STRING,),
    "lora.init": (STRING,), "lora.quantization": (STRING, NONE), "lora.target_r": (INT, NONE),
    "lora.layers": (LIST, NONE), "lora.layers.*": (INT,), "lora.train_head": (STRING,),
    "loss.name": (STRING,), "loss.in_batch": (BOOL, STRING), "loss.temperature": (NUMBER,), "loss.lambda_d": (NUMBER,),
    "loss.lambda_q": (NUMBER,), "loss.warmup_steps": (INT, NONE), "loss.warmup_fraction": (NUMBER,),
    "loss.teacher_temperature": (NUMBER, NONE), "loss.flops_normalization": (STRING,), "loss.weights": (MAPPING,), "loss.weights.*": (NUMBER,),
    "optim.lr": (NUMBER,), "optim.query_table_lr": (NUMBER,), "optim.weight_decay": (NUMBER,), "optim.warmup_steps": (INT,),
    "trainer.*": (LIGHTNING_TRAINER,),
    "index.name": (STRING,), "index.quantization": (NUMBER,), "index.shards": (INT,), "index.threads": (INT,),
    "index.tokens_per_batch": (INT,), "index.max_batch_size": (INT,),
    "index.encode_shards": (INT,), "index.encode_processes": (INT,), "index.shard_launcher": (STRING,),
    "index.submitit": (MAPPING,), "index.submitit.*": (STRING, NUMBER, BOOL, NONE),
    "eval.datasets": (MAPPING,),
    "eval.datasets.*.name": (STRING,), "eval.datasets.*.source": (STRING,), "eval.datasets.*.split": (STRING,),
    "eval.datasets.*.path": (STRING, NONE), "eval.datasets.*.hub_id": (STRING, NONE),
    "eval.datasets.*.unknown_ids": (STRING,), "eval.datasets.*.max_queries": (INT, NONE),
    "eval.datasets.*.max_documents": (INT, NONE),
    "eval.validate_every_n_steps": (INT,), "eval.validation_split": (STRING,),
    "eval.validation_max_queries": (INT, NONE), "eval.validation_max_documents": (INT, NONE),
    "eval.k": (INT,), "eval.search_threads": (INT,), "eval.bm25": (BOOL,), "eval.zero_shot": (BOOL,),
    "logger.name": (STRING,), "logger.project": (STRING,), "logger.group": (STRING, NONE), "logger.mode": (STRING, NONE),
    "logger.run_name": (STRING, NONE), "logger.job_type": (STRING, NONE), "logger.notes": (STRING, NONE),
    "logger.tags": (LIST,), "logger.*": (WANDB_ARGUMENT,),
}


def is_kind(value, kind: str) -> bool:
    checks = {
        INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
        NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        STRING: lambda v: isinstance(v, str), BOOL: lambda v: isinstance(v, bool), NONE: lambda v: v is None,
        LIST: lambda v: isinstance(v, list), MAPPING: lambda v: isinstance(v, dict),
        LIGHTNING_TRAINER: lambda v: True, WANDB_ARGUMENT: lambda v: True,
    }
    return checks[kind](value)


def declaration(path: str) -> tuple[str, tuple[str, ...]] | None:
    if path in SCHEMA:
        return path, SCHEMA[path]
    depth = path.count(".")
    return next(((p, kinds) for p, kinds in SCHEMA.items() if p.count(".") == depth and fnmatch.fnmatchcase(path, p)), None)


def entries(value, path: str = ""):
    """(key path, value) for every key at every depth; lists count as one value unless their items are declared."""
    if path:
        yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from entries(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and declaration(f"{path}.0"):
        for index, item in enumerate(value):
            yield f"{path}.{index}", item


@cache
def trainer_arguments() -> frozenset[str]:
    import lightning

    return frozenset(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}


@cache
def trainer_argument_kinds(name: str) -> tuple[str, ...]:
    """The kinds of value Lightning's annotation of Trainer(<name>=...) allows; () when it cannot say."""
    import lightning

    def kinds(annotation) -> set[str]:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            return set().union(*map(kinds, typing.get_args(annotation)))
        if origin is typing.Literal:
            return set().union(*(kinds(type(value)) for value in typing.get_args(annotation)))
        found = PYTHON_KINDS.get(origin or annotation)
        return {found} if found else set()

    annotation = typing.get_type_hints(lightning.Trainer.__init__).get(name)
    return tuple(sorted(kinds(annotation))) if annotation is not None else ()


@cache
def wandb_arguments() -> frozenset[str]:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    return frozenset(inspect.signature(WandbLogger.__init__).parameters) | frozenset(inspect.signature(wandb.init).parameters)


def check_schema(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key that is not declared or whose value has the wrong type."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    for path, value in entries(config):
        declared = declaration(path)
        if declared is None:
            if is_section(path):
                continue  # data, lora, eval.datasets.<name>, ...: their keys are checked one by one
            top = path.split(".")[0]
            known = sorted(p for p in SCHEMA if p.startswith(top + "."))
            raise ConfigError(path, "is not a key this project reads (a typo?)",
                              f"remove it or use one of: {', '.join(known) or ', '.join(sorted(SCHEMA))}")
        _, kinds = declared
        if kinds == (LIGHTNING_TRAINER,):
            if path.split(".")[-1] not in trainer_arguments():
                raise ConfigError(path, "is not an argument of lightning.Trainer", "check its spelling in the Lightning docs")
            kinds = trainer_argument_kinds(path.split(".")[-1]) or kinds
        if kinds == (WANDB_ARGUMENT,) and path.split(".")[-1] not in wandb_arguments():
            raise ConfigError(path, "is not an argument of WandbLogger or wandb.init", "check its spelling in the W&B docs")
        if not any(is_kind(value, kind) for kind in kinds):
            raise ConfigError(path, f"{value!r} has the wrong type", f"use {' or '.join(kinds)}")


def is_section(path: str) -> bool:
    depth = path.count(".") + 1
    return any(p.count(".") >= depth and fnmatch.fnmatchcase(path, ".".join(p.split(".")[:depth])) for p in SCHEMA)
