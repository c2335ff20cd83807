"""Hydra callback around a whole sweep: prepare its folder, and at the end gather its jobs' results into
one table and a few plots, print the table, and exit non-zero when a job failed."""

import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepBookkeeping(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Before the sweeper starts: an Optuna study is stored in SQLite inside the sweep folder.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        unfinished = unfinished_jobs(sweep_dir, getattr(self, "started", 0.0))
        report_study(sweep_dir, config)
        if unfinished:
            print(f"splade_peft: {len(unfinished)} job(s) of the sweep did not complete: {', '.join(unfinished)} "
                  f"(each folder's error.log says why; rerun with sweep.rerun_failed=true)", file=sys.stderr)
            # SystemExit passes through Hydra's callback guard (it catches Exception): the exit status.
            sys.exit(1)


def launched_since(folder: Path, started: float) -> bool:
    """Hydra writes a job's .hydra/overrides.yaml as it launches it (a job skipped as already done included);
    a folder of an earlier grid in the same sweep folder was written before this multirun started."""
    overrides = folder / ".hydra" / "overrides.yaml"
    return not overrides.exists() or overrides.stat().st_mtime >= started - 1.0


def unfinished_jobs(sweep_dir: Path, started: float = 0.0) -> list[str]:
    """The job folders this multirun launched whose results.json does not say completed (failed,
    unreadable, or never written)."""
    from splade_peft.results import COMPLETED, JobResult
    from splade_peft.sweep.load import UNREADABLE, is_job_folder

    unfinished = []
    for folder in sorted(p for p in sweep_dir.iterdir() if is_job_folder(p) and launched_since(p, started)):
        try:
            status = JobResult.read(folder).status
        except (OSError, ValueError):
            status = UNREADABLE
        if status != COMPLETED:
            unfinished.append(folder.name)
    return unfinished


def report_study(sweep_dir: Path, config: DictConfig) -> None:
    from splade_peft.sweep.build import build_report, log_report_to_wandb

    try:
        report = build_report(sweep_dir)
        print(f"\n{report.table}\n\nsweep report: {sweep_dir / 'report.md'}")
        if config.logger.name == "wandb":
            log_report_to_wandb(report, config.logger.project, config.logger.group)
    except Exception as error:  # the jobs' results are already on disk; a report failure must not hide them
        log.error("could not build the sweep report for %s: %s -- run `python -m splade_peft.report %s`", sweep_dir, error, sweep_dir)
