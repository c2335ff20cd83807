"""Experiment tracking: W&B (offline without an API key), CSV, or nothing; one place that ends every run."""

import logging
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from splade_peft.errors import ConfigError
from splade_peft.results import JobResult

log = logging.getLogger(__name__)
LOGGERS = ("wandb", "csv", "none")


def wandb_mode(configured: str | None) -> str:
    if configured:
        return configured
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists() and "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    return "online" if has_key else "offline"


def logged_name(column: str) -> str:
    """A results column as the tracker names it: `test/<dataset>/<key>`, `params/<key>`, `timing/<key>`, ..."""
    return f"test/{column}" if "/" in column else column.replace(".", "/", 1)


def logged_values(result: JobResult) -> dict[str, float]:
    values = {logged_name(column): value for column, value in result.flat().items()}
    for system, evaluation in result.references.items():
        values.update({f"reference/{system}/{column}": value for column, value in evaluation.flat().items()})
    return values


class ExperimentTracker:
    def __init__(self, logger_cfg, run_dir: Path, run_name: str, config: dict):
        if logger_cfg.name not in LOGGERS:
            raise ConfigError("logger.name", f"unknown logger '{logger_cfg.name}'", f"use logger= one of {', '.join(LOGGERS)}")
        self.kind = logger_cfg.name
        self.lightning_logger = self.make_logger(logger_cfg, run_dir, run_name, config)

    def make_logger(self, logger_cfg, run_dir: Path, run_name: str, config: dict):
        if self.kind == "wandb":
            return WandbLogger(
                project=logger_cfg.project, group=logger_cfg.group, name=run_name, save_dir=str(run_dir),
                mode=wandb_mode(logger_cfg.mode), config=config,
            )
        if self.kind == "csv":
            return CSVLogger(str(run_dir), name="csv")
        return False

    def log_results(self, record: dict) -> None:
        if not self.lightning_logger:
            return
        result = JobResult.from_json(record)
        self.lightning_logger.log_metrics(logged_values(result))
        if self.kind == "wandb":
            self.log_wandb_table(result)

    def log_wandb_table(self, result: JobResult) -> None:
        import wandb

        from splade_peft.summary import summary_rows, SUMMARY_COLUMNS

        table = wandb.Table(columns=SUMMARY_COLUMNS, data=summary_rows(result))
        self.lightning_logger.experiment.log({"test/summary": table})

    def finish(self, status: str) -> None:
        if self.kind == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.run.summary["status"] = status
            wandb.finish(exit_code=0 if status == "completed" else 1)
        elif self.kind == "csv":
            self.lightning_logger.save()
