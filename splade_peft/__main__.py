"""`python -m splade_peft [overrides]`: one job (or, with -m, one job per grid point of a Hydra sweep)."""

import contextlib
import logging
import math
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import splade_peft.config  # noqa: F401  (registers the config resolvers before composition)
from splade_peft.errors import describe_failure
from splade_peft.preflight import command_line_problem
from splade_peft.records import fingerprint, redact, redact_saved_config, redact_text
from splade_peft.results import COMPLETED, FAILED, RESULTS_FILE, JobResult

log = logging.getLogger("splade_peft")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
# sweep.* keys that change how a study is reported or re-run, not what a job computes.
REPORT_ONLY = ("rerun_failed", "control", "family", "test", "margin", "out_of_domain")


def experiment_name() -> str:
    return HydraConfig.get().runtime.choices.get("experiment") or "default"


def run_name() -> str:
    """`<experiment>` or `<experiment>:<overrides>`; the overrides redacted (a credential must not name a run)."""
    overrides = ",".join(redact(HydraConfig.get().job.override_dirname.split(",")))
    return f"{experiment_name()}:{overrides}" if overrides else experiment_name()


def swept_values(cfg: DictConfig) -> dict:
    """The job's overrides (the grid point in a sweep) as {key: value}, typed as the config holds them; a
    config group's value is the option chosen (loss=kl -> "kl")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = HydraConfig.get()
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    values = {}
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        key = override.key_or_group
        if key in excluded or key.startswith("hydra.") or override.is_delete():
            continue
        value = OmegaConf.select(cfg, key, default=None)
        values[key] = hydra_cfg.runtime.choices.get(key) if isinstance(value, DictConfig) or value is None else value
    return redact(OmegaConf.to_container(OmegaConf.create(values), resolve=True))


def run_identity(cfg: DictConfig):
    """Name, group, job type, tags and notes of the job's W&B run, derived from the config."""
    from splade_peft.tracking import RunIdentity

    hydra_cfg = HydraConfig.get()
    multirun_folder = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    experiment = experiment_name()
    tags = [experiment, cfg.sweep.name, f"lora:{cfg.lora.method}", f"encoder:{cfg.encoder.name}", f"data:{cfg.data.name}"]
    return RunIdentity(
        name=run_name(), group=cfg.sweep.name or multirun_folder,
        job_type="evaluate" if cfg.lora.method == "frozen" else "train",
        tags=[tag for tag in tags if tag], notes=cfg.sweep.question, axes=swept_values(cfg),
    )


def config_fingerprint(config: dict) -> str:
    """What decides whether an earlier result in the same folder is this job's result."""
    return fingerprint({**config, "sweep": {k: v for k, v in config.get("sweep", {}).items() if k not in REPORT_ONLY}})


def earlier_result(run_dir: Path, record: JobResult, rerun_failed: bool) -> JobResult | None:
    """A finished result of this very job (same folder, same config) that a re-run should keep."""
    try:
        earlier = JobResult.read(run_dir)
    except (OSError, ValueError):  # none yet, or unreadable: the job runs
        return None
    keep = {COMPLETED} if rerun_failed else {COMPLETED, FAILED}
    return earlier if earlier.status in keep and earlier.config_fingerprint == record.config_fingerprint else None


def hide_credentials(run_dir: Path) -> None:
    """Credentials given on the command line or through the environment reach no artefact of the job."""
    if HydraConfig.get().output_subdir is not None:
        redact_saved_config(run_dir / HydraConfig.get().output_subdir)
    # W&B records the command line (wandb-metadata.json) from sys.argv, which Hydra has finished parsing.
    sys.argv[1:] = redact(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # Imported here so that `--help` and config errors answer without loading torch.
    from splade_peft.pipeline import job_record, run_job
    from splade_peft.tracking import ExperimentTracker
    from splade_peft.training.distributed import is_rank_zero

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not is_rank_zero():
        # A process of rank > 0 (trainer.devices > 1: started on this job's overrides by training/ddp_launch.py,
        # or by the cluster): it trains beside rank zero, which writes every file of the job, and exits after.
        run_job(cfg, run_dir, tracker=None)
        return math.nan
    hide_credentials(run_dir)
    results_path = run_dir / RESULTS_FILE
    started = job_record(cfg)
    record = JobResult(**started, overrides=redact(list(HydraConfig.get().overrides.task)),
                       config_fingerprint=config_fingerprint(started["config"]))
    earlier = earlier_result(run_dir, record, cfg.sweep.rerun_failed)
    if earlier is not None:
        print(f"splade_peft: {run_dir.name} already {earlier.status} ({results_path}); skipped")
        return earlier.dev_figure(cfg.sweep.metric)
    record.write(run_dir)
    tracker = None
    try:
        tracker = ExperimentTracker(cfg.logger, run_dir, run_identity(cfg), record.config)
        record = replace(record, **run_job(cfg, run_dir, tracker), status=COMPLETED)
        tracker.log_results(record)
    except Exception as error:  # every failure is recorded; the sweep (if any) goes on
        record = replace(record, status=FAILED, error=describe_failure(error))
        with contextlib.suppress(OSError):  # the disk may be the thing that failed
            (run_dir / "error.log").write_text(redact_text(traceback.format_exc()))
    record = record.redacted()
    try:
        record.write(run_dir)
    except OSError as error:
        # results.json still says "running": a rerun redoes the job rather than trusting it.
        record = replace(record, status=FAILED, error=f"{RESULTS_FILE} not written: {describe_failure(error)}")
    if tracker is not None:
        tracker.finish(record.status)
    report(record, results_path)
    # A sweeper that optimises (hparams_search=optuna) maximises this: the dev figure, never a test one.
    return record.dev_figure(cfg.sweep.metric)


def report(record: JobResult, results_path: Path) -> None:
    from splade_peft.summary import format_table

    if record.status == COMPLETED:
        print(format_table(record))
        print(f"\nresults: {results_path}")
        return
    print(f"splade_peft: {record.error}\n(job failed; details in {results_path.parent / 'error.log'})", file=sys.stderr)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)


def entry() -> None:
    """`python -m splade_peft` and `splade-peft run`: one job, or a sweep with -m. A command line that cannot
    compose or launch stops here in one line (HYDRA_FULL_ERROR=1: Hydra's whole report instead)."""
    if os.environ.get("HYDRA_FULL_ERROR") != "1":
        problem = command_line_problem(sys.argv[1:], CONFIG_DIR)
        if problem:
            print(f"splade_peft: {problem}", file=sys.stderr)
            sys.exit(1)
    main()


if __name__ == "__main__":
    entry()
