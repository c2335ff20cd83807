"""The `loss=`, `optim=` and `trainer=` groups' keys and the root `training:` keys (conf/loss, conf/optim,
conf/trainer, conf/config.yaml)."""

import inspect
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Optional, Union

from splade_peft.errors import ConfigError
from splade_peft.registry import Registry
from splade_peft.settings import Number, Section, library_argument, section, setting

IN_BATCH = (True, False, "local", "global")
FLOPS_NORMALIZATIONS = ("batch", "unbiased")  # splade_peft.training.regularizers.flops


# The losses `loss.weights` can name, each registered next to its implementation (splade_peft/training/losses.py).
RANKING_LOSSES = Registry("ranking loss", "loss.weights", builtins="splade_peft.training.losses", needs_teacher=False)


@dataclass
class LossWeights(Section):
    """loss.weights: the ranking loss is their weighted sum. The built-in losses are typed here; a loss
    registered elsewhere gets its weight as a further key (`loss.weights.my_loss=1.0`)."""

    open = True

    contrastive: Number = setting(at_least=0)
    margin_mse: Number = setting(at_least=0)
    kl: Number = setting(at_least=0)

    def check_extra(self, path: str, extra: dict) -> None:
        for name, weight in extra.items():
            RANKING_LOSSES.get(name, key=f"{path}.{name}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"{path}.{name}", f"{weight!r} is not allowed", "use a number >= 0")

    def items(self) -> dict[str, float]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, **vars(self)}


@dataclass
class LossConfig(Section):
    name: str = setting()
    weights: LossWeights = section(LossWeights)
    in_batch: Union[bool, str] = setting(one_of=IN_BATCH, says="true (= local), false, local or global")
    temperature: Number = setting(above=0)
    teacher_temperature: Optional[Number] = setting(above=0, note="null: loss.temperature")
    lambda_d: Number = setting(at_least=0)
    lambda_q: Number = setting(at_least=0)
    flops_normalization: str = setting(one_of=FLOPS_NORMALIZATIONS)
    warmup_steps: Optional[int] = setting(at_least=0, note="null: loss.warmup_fraction of the run")
    warmup_fraction: Number = setting(at_least=0, at_most=1)

    def check(self, path: str, root) -> None:
        weights = self.weights.items()
        if not any(weights.values()):
            raise ConfigError("loss.weights", "every ranking loss has weight 0", "give at least one loss a weight > 0")
        distilling = [name for name, weight in weights.items() if weight and RANKING_LOSSES.get(name).needs_teacher]
        if distilling and not root.data.has_teacher:
            raise ConfigError(f"loss.weights.{distilling[0]}", "distillation needs teacher scores and none are set",
                              "set data.teacher.scorers=[splade] (or [bm25]) or data.teacher.files=[...], or use loss=contrastive")


@dataclass
class OptimConfig(Section):
    lr: Number = setting(above=0)
    weight_decay: Number = setting(at_least=0)
    warmup_steps: int = setting(at_least=0)
    query_table_lr: Number = setting(above=0)


@dataclass
class TrainerConfig(Section):
    """Lightning Trainer arguments, passed through as they are: the keys below are typed here (the ones every
    trainer file sets); any other must be an argument of lightning.Trainer, of a type its signature takes."""

    open = True

    accelerator: str = setting()
    devices: Any = setting()
    precision: Union[int, str] = setting()
    max_steps: int = setting(allows=lambda v: v == -1 or v >= 1, says="an integer >= 1 (-1: until max_epochs)")
    accumulate_grad_batches: int = setting(at_least=1)
    gradient_clip_val: Optional[Number] = setting(at_least=0)
    log_every_n_steps: int = setting(at_least=1)
    compile: bool = setting()  # the project's own key, not Lightning's: torch.compile on each encoder backbone
    ddp_timeout_min: Number = setting(above=0)  # the project's own: the DDP process group's timeout (ddp_launch.py)
    gradient_checkpointing: bool = setting()  # the project's own key too: activation checkpointing in each backbone

    def check_extra(self, path: str, extra: dict) -> None:
        for key, value in extra.items():
            library_argument("lightning.Trainer", f"{path}.{key}", value, trainer_annotations())


@cache
def trainer_annotations() -> dict[str, Any]:
    """lightning.Trainer's arguments and their annotations (imported here: lightning is slow to import)."""
    import lightning

    hints = typing.get_type_hints(lightning.Trainer.__init__)
    return {name: hints.get(name, Any) for name in inspect.signature(lightning.Trainer.__init__).parameters if name != "self"}


@dataclass
class CollapseStopConfig(Section):
    """training.collapse_stop: stop a sparse encoder's job whose vectors went empty or full (training/collapse.py)."""

    enabled: bool = setting()
    min_nonzeros: Number = setting(at_least=0)
    max_fill: Number = setting(above=0, at_most=1, says="a number in (0, 1]")


@dataclass
class TrainingConfig(Section):
    """The root `training:` keys: checkpoints, the non-finite guard, selection on the validation metric."""

    checkpoint_every_n_steps: int = setting(at_least=1)
    max_nonfinite_batches: int = setting(at_least=0)
    keep_best: bool = setting()
    early_stopping_patience: int = setting(at_least=0, note="0: off")
    collapse_stop: CollapseStopConfig = section(CollapseStopConfig)

    def check(self, path: str, root) -> None:
        if (self.keep_best or self.early_stopping_patience) and not root.eval.validate_every_n_steps:
            raise ConfigError("eval.validate_every_n_steps", "is 0, and training.keep_best/early_stopping_patience "
                              "need validation", "set eval.validate_every_n_steps >= 1")
        # A mixture's batch order is not sharded across processes: every device would train on the same batches.
        one_device = device_count(root.trainer.devices) == 1 and getattr(root.trainer, "num_nodes", 1) == 1
        if root.data.mixture.datasets and not one_device:
            raise ConfigError("data.mixture", "is not split across devices", "train a mixture with trainer.devices=1")


def device_count(devices) -> int | None:
    """How many devices trainer.devices asks for (a count, a list or a comma-separated string of indices);
    None where Lightning decides at run time (auto, -1: every device there is)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([index for index in text.split(",") if index.strip()])
    if text.lstrip("-").isdigit() and int(text) != -1:
        return int(text)
    return None
