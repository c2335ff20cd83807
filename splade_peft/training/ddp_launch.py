"""The DDP strategy of a job that trains on more than one device: its extra processes run this job, and its
process group waits as long as trainer.ddp_timeout_min for every process to join.

Lightning starts each extra process by running the command line again. Under `-m` that command line is the
whole sweep: the extra processes would run every grid point rather than the one rank zero trains, and write
Hydra's files for each. Here each extra process runs `python -m splade_peft <this job's overrides>` in this
job's folder, as a single run that writes no file: rank zero writes every file of the job.
"""

import os
import subprocess
import sys
from datetime import timedelta

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from splade_peft.training.config import device_count

# Hydra settings of rank zero's job that say how it was launched (mode, launcher, sweeper, sweep folder) and
# what it writes (run folder, .hydra/, log file): an extra process gets its own instead.
LAUNCH_SETTINGS = ("hydra.mode", "hydra.run", "hydra.sweep", "hydra.launcher", "hydra/launcher", "hydra.sweeper",
                   "hydra/sweeper", "hydra.output_subdir", "hydra.job_logging", "hydra/job_logging", "hydra.job.name")
# Lightning's own choices that start their processes with the popen launcher; any other strategy is the user's.
POPEN_DDP = ("auto", "ddp")
# What torch.distributed's env:// rendezvous reads, set by the launcher in rank zero's own environment too.
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def data_parallel_strategy(trainer_arguments: dict, timeout_min: float) -> dict:
    """{"strategy": JobDDPStrategy} for lightning.Trainer when it runs more than one process (or lets Lightning
    count the devices) and no other strategy is asked for; {} for one process."""
    one_process = device_count(trainer_arguments["devices"]) == 1 and trainer_arguments.get("num_nodes", 1) == 1
    if one_process or trainer_arguments.get("strategy", "auto") not in POPEN_DDP:
        return {}
    # Ranks > 0 that the cluster starts together with rank zero (SLURM, torchrun) reach the rendezvous at once and
    # wait there while rank zero computes the BM25 and zero-shot rows and dev_at_start: hours on MS MARCO, where
    # torch's default of 30 minutes would stop the job. Rank zero joins only after its preparation, so the
    # process group's timeout is what bounds that wait (and how late a hung collective is noticed).
    return {"strategy": JobDDPStrategy(timeout=timedelta(minutes=timeout_min))}


class JobDDPStrategy(DDPStrategy):
    """Lightning's DDP, whose extra processes run this job (not the sweep), and whose process group and
    rendezvous variables end with the fit: the next job of a sweep run in this process (Hydra's basic launcher
    runs them one after another) starts its own processes and forms its own group. Lightning would keep both:
    with LOCAL_RANK still set it takes the processes to be started by a cluster and starts none."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method == "popen":
            self._launcher = JobScriptLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def teardown(self) -> None:
        super().teardown()
        if isinstance(self._launcher, JobScriptLauncher) and self._launcher.environment_before is not None:
            if dist.is_initialized():
                dist.destroy_process_group()  # its other members exit with the fit
            self._launcher.restore_environment()


class JobScriptLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of the extra local processes, each started on `job_command()` inside a Hydra job;
    without Hydra (fit called from Python), on the script's own command line as Lightning does."""

    environment_before: dict | None = None  # the rendezvous variables before this process (rank zero) set them

    def _call_children_scripts(self) -> None:
        self.environment_before = {name: os.environ.get(name) for name in RENDEZVOUS_VARIABLES}
        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        environment = self.cluster_environment
        os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port),
                          NODE_RANK=str(environment.node_rank()), LOCAL_RANK=str(environment.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        command, cwd = job_command(), HydraConfig.get().runtime.cwd
        for local_rank in range(1, self.num_processes):
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)}, cwd=cwd))

    def restore_environment(self) -> None:
        for name, value in self.environment_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def job_command() -> list[str]:
    """`python -m splade_peft` on this Hydra job: the config it was composed from (--config-* flags, Hydra
    settings but the launch ones, the job's overrides: under -m its grid point), run in the job's folder
    without writing .hydra/ or a log file there (its log goes to stdout)."""
    hydra_cfg = HydraConfig.get()
    folder = QuotedString(text=hydra_cfg.runtime.output_dir, quote=Quote.single).with_quotes()
    return [sys.executable, "-m", "splade_peft", *config_location_flags(sys.argv[1:]),
            *job_hydra_overrides(list(hydra_cfg.overrides.hydra)), *hydra_cfg.overrides.task,
            f"hydra.run.dir={folder}", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def job_hydra_overrides(overrides: list[str]) -> list[str]:
    """The hydra.* overrides that shape the job itself (hydra.searchpath, hydra.job.chdir, ...)."""
    def launch_setting(key: str) -> bool:
        return any(key == name or key.startswith((f"{name}.", f"{name}/")) for name in LAUNCH_SETTINGS)

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [override.input_line for override in parsed if not launch_setting(override.key_or_group)]


def config_location_flags(arguments: list[str]) -> list[str]:
    """--config-path, --config-name and --config-dir as the command line gave them."""
    from hydra._internal.utils import get_args_parser

    parsed = get_args_parser().parse_args(arguments)
    given = {"--config-path": parsed.config_path, "--config-name": parsed.config_name, "--config-dir": parsed.config_dir}
    return [f"{flag}={value}" for flag, value in given.items() if value is not None]
