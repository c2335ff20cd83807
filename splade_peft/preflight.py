"""Before Hydra starts any job: the command line's config composes, at every value a sweep gives a key, the
chosen launcher can start on this machine, and a job that asks for a GPU finds one here. Hydra reports a config
that does not compose in several lines of OmegaConf's wording, a launcher that cannot start (SLURM without sbatch)
with submitit's traceback, and Lightning a missing GPU only at fit, after the reference rows; this says each in
one line naming the key and the fix. Only a GPU job imports torch: a bad command line answers at once."""

import shutil
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException

from splade_peft.config import composition_error
from splade_peft.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")


def command_line_problem(arguments: list[str], config_dir: Path) -> str | None:
    """The one-line problem with `python -m splade_peft <arguments>`, or None when it composes (or when Hydra's
    own flags, e.g. --help or --cfg, are given: Hydra answers those itself)."""
    overrides = [argument for argument in arguments if argument not in MULTIRUN_FLAGS]
    if any(argument.startswith("-") for argument in overrides):
        return None
    try:
        grid = list(grid_points(overrides))
    except OverrideParseException:
        return None  # Hydra reports a malformed override with its position in the line
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for point in grid:
            try:
                cfg = compose(config_name="config", overrides=point, return_hydra_config=True)
            except ConfigCompositionException as error:
                problem = composition_error(error)
                if problem is None:
                    return None  # e.g. an unknown option: Hydra's message lists the available ones
                return str(problem)
            problem = device_problem(cfg)
            if problem:
                return problem
        return launcher_problem(launcher_target(cfg))


def grid_points(overrides: list[str]) -> Iterator[list[str]]:
    """The command line with each sweep (`lora.r=1,4,8`, `loss=kl,contrastive`) at each of its values in turn,
    the other sweeps at their first: every value is composed once, not every combination."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
    values = {override.get_key_element(): sweep_values(override) for override in parsed if override.is_sweep_override()}
    first = [f"{key}={choices[0]}" for key, choices in values.items() if choices]
    yield fixed + first
    for key, choices in values.items():
        for value in choices[1:]:
            yield fixed + [f"{key}={value}"] + [o for o in first if not o.startswith(f"{key}=")]


def sweep_values(override) -> list[str]:
    """A choice or range sweep's values; none for an interval (an Optuna search picks those itself)."""
    try:
        return list(override.sweep_string_iterator())
    except Exception:  # interval sweeps have no finite list of values
        return []


def launcher_target(cfg) -> str:
    return str(cfg.hydra.launcher.get("_target_", ""))


def device_problem(cfg) -> str | None:
    """A job that asks for a GPU where none is visible (or for GPUs this machine lacks). Jobs a SLURM launcher
    submits run on other machines: each checks its own when it starts (pipeline.run_job)."""
    if launcher_target(cfg).endswith("SlurmLauncher") or str(cfg.trainer.accelerator) == "cpu":
        return None  # a CPU job's command line is checked without importing torch
    from splade_peft.device import job_device

    try:
        job_device(cfg.trainer)
    except ConfigError as error:
        return str(error)
    return None


def launcher_problem(target: str) -> str | None:
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        return ("hydra/launcher=slurm needs SLURM, and there is no `sbatch` on this machine's PATH -- run on a SLURM "
                "login node, or here with hydra/launcher=local_parallel (or no hydra/launcher override)")
    return None
