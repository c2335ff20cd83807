"""Hydra callback around a whole sweep: prepare its folder, and at the end gather its jobs' results
into one table and a few plots."""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepBookkeeping(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Before the sweeper starts: an Optuna study is stored in SQLite inside the sweep folder.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from splade_peft.sweep.build import build_report, log_report_to_wandb

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = build_report(sweep_dir)
            print(f"\nsweep report: {sweep_dir / 'report.md'}")
            if config.logger.name == "wandb":
                log_report_to_wandb(report, config.logger.project, config.logger.group)
        except Exception as error:  # the jobs' results are already on disk; a report failure must not hide them
            log.error("could not build the sweep report for %s: %s -- run `python -m splade_peft.report %s`", sweep_dir, error, sweep_dir)
