"""Before Hydra starts any job: every grid point of the command line composes and passes the config's checks,
the chosen launcher can start on this machine, and a job that asks for a GPU finds one here. Hydra reports a config
that does not compose in several lines of OmegaConf's wording, a value out of range only inside the job that has it
(after results.json and the tracker are open), a launcher that cannot start (SLURM without sbatch) with submitit's
traceback, and Lightning a missing GPU only at fit; this says each in one line naming the key and the fix, before
any job folder exists. The checks import what the jobs then use (the same process runs them): a bad command line
answers in seconds."""

import copy
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from splade_peft.config import composition_error, override_error, validate
from splade_peft.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
# Each grid point's values are checked on a copy of its composition (~10 ms a point); a larger grid (or one over
# many group options, ~0.25 s a composition) is checked one value at a time, and each job still checks itself.
MAX_CHECKED_POINTS, MAX_COMPOSITIONS = 1024, 24


def command_line_problem(arguments: list[str], config_dir: Path) -> str | None:
    """The one-line problem with `python -m splade_peft <arguments>`, or None when every grid point composes and
    validates (or when Hydra's own flags, e.g. --help or --cfg, are given: Hydra answers those itself)."""
    overrides = [argument for argument in arguments if argument not in MULTIRUN_FLAGS]
    if any(argument.startswith("-") for argument in overrides):
        return None
    try:
        grid = Grid(overrides, config_dir)
    except OverrideParseException:
        return None  # Hydra reports a malformed override with its position in the line
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = None
        for composed_with, value_points in grid.compositions():
            try:
                cfg = compose(config_name="config", overrides=composed_with, return_hydra_config=True)
            except ConfigCompositionException as error:
                problem = composition_error(error)
                if problem is None:
                    return None  # e.g. an unknown option: Hydra's message lists the available ones
                return str(problem)
            problem = device_problem(cfg) or invalid_point(cfg, value_points)
            if problem:
                return problem
        return launcher_problem(launcher_target(cfg)) or gpu_request_problem(cfg.hydra.launcher)


class Grid:
    """A command line's sweeps, split by what checking them takes: a config group's options (`lora=qlora,dora`,
    `+sweep=rank`) change the composition, a key's values (`lora.r=1,4`, `seed=1,2,3`) only its value."""

    def __init__(self, overrides: list[str], config_dir: Path):
        parsed = OverridesParser.create().parse_overrides(overrides)
        self.fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
        sweeps = [override for override in parsed if override.is_sweep_override()]
        self.composing = {o.get_key_element(): sweep_values(o) for o in sweeps if changes_composition(o, config_dir)}
        self.values = {o.key_or_group: sweep_values(o) for o in sweeps if not changes_composition(o, config_dir)}

    def compositions(self) -> Iterator[tuple[list[str], list[dict]]]:
        """(overrides to compose with, the value points to check on that composition) until every point is checked
        or, past the limits, every value once."""
        options, values = combinations(self.composing), combinations(self.values)
        if len(options) <= MAX_COMPOSITIONS and len(options) * len(values) <= MAX_CHECKED_POINTS:
            for option in options:
                yield self.fixed + [f"{key}={value}" for key, value in option.items()], values
            return
        for point in each_value_once({**self.composing, **self.values}):
            yield self.fixed + [f"{key}={display(value)}" for key, value in point.items()], [{}]


def changes_composition(override: Override, config_dir: Path) -> bool:
    return (override.is_add() or override.is_force_add() or override.is_delete() or override.package is not None
            or (config_dir / override.key_or_group).is_dir())


def sweep_values(override: Override) -> list:
    """A choice or range sweep's values; none for an interval (an Optuna search picks those itself)."""
    try:
        return list(override.sweep_iterator())
    except Exception:  # interval sweeps have no finite list of values
        return []


def combinations(sweeps: dict[str, list]) -> list[dict]:
    listed = {key: values for key, values in sweeps.items() if values}
    return [dict(zip(listed, point)) for point in itertools.product(*listed.values())]


def each_value_once(sweeps: dict[str, list]) -> Iterator[dict]:
    first = {key: values[0] for key, values in sweeps.items() if values}
    yield first
    for key, values in sweeps.items():
        for value in values[1:]:
            yield {**first, key: value}


def display(value) -> str:
    """A parsed override value written back in Hydra's syntax (a list as [a,b])."""
    return f"[{','.join(display(item) for item in value)}]" if isinstance(value, list) else str(value)


def invalid_point(cfg: DictConfig, value_points: list[dict]) -> str | None:
    """The first config check a grid point fails, naming its key; the composition without Hydra's own node."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    for point in value_points:
        checked = copy.deepcopy(job)
        for key, value in point.items():
            try:
                OmegaConf.update(checked, key, value, merge=False)
            except OmegaConfBaseException as error:  # an unknown key, a value of the wrong type
                return str(override_error(error, key, value))
        try:
            validate(checked)
        except ConfigError as error:
            return str(error)
    return None


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


def gpu_request_problem(launcher: DictConfig) -> str | None:
    """A SLURM launcher asking for GPUs twice: sbatch adds `--gres=gpu:...` to `--gpus-per-node`."""
    gres, per_node = launcher.get("gres"), launcher.get("gpus_per_node")
    if gres and "gpu" in str(gres) and per_node:
        return (f"config key 'hydra.launcher.gres': {gres} asks for GPUs beside hydra.launcher.gpus_per_node={per_node} "
                "-- ask once: hydra.launcher.gpus_per_node=null with gres, or constraint=<GPU type> with gpus_per_node")
    return None
