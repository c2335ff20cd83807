"""Experiment tracking: W&B (offline without an API key), CSV, or nothing; one place that ends every run.

A W&B run per job: named after its experiment and overrides, grouped by study (or multirun), tagged and
annotated from the config, resumed (same id) when the job runs again in its folder, with its overrides as
config["sweep_axes"] (the columns W&B's parallel-coordinates panel offers), the results as summary metrics,
and the adapter, run files and per-query values as artifacts.
"""

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from splade_peft.config import LOGGERS
from splade_peft.errors import ConfigError
from splade_peft.results import COMPLETED, PER_QUERY_FILE, RESULTS_FILE, JobResult

log = logging.getLogger(__name__)
# logger.* keys this module reads itself; every other key of logger=wandb goes to WandbLogger / wandb.init.
OWN_KEYS = ("name", "run_name", "mode", "tags")
RUN_ID_FILE = "wandb_run_id"
# Effectiveness metrics: higher is better, so their W&B summary is the best value seen.
MAXIMISED = ("ndcg", "mrr", "recall", "map", "precision", "success")


def wandb_mode(configured: str | None) -> str:
    """WANDB_MODE from the environment wins; then the config; then online with a key, offline without."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if configured:
        return configured
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or netrc.exists() and "api.wandb.ai" in netrc.read_text()
    return "online" if has_key else "offline"


def logged_name(column: str) -> str:
    """A results column as the tracker names it: `test/<dataset>/<key>`, `params/<key>`, `timing/<key>`, ..."""
    return f"test/{column}" if "/" in column else column.replace(".", "/", 1)


def logged_values(result: JobResult) -> dict[str, float]:
    values = {logged_name(column): value for column, value in result.flat().items()}
    for system, evaluation in result.reference_rows.items():
        values.update({f"reference/{system}/{column}": value
                       for column, value in {**evaluation.flat(), **result.suite_columns(evaluation)}.items()})
    return values


def is_maximised(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1].lower()
    return name.startswith(MAXIMISED)


@dataclass
class RunIdentity:
    """Who a job's W&B run is: what the W&B UI lists, groups, filters and compares it by."""

    name: str
    group: str | None = None
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    axes: dict = field(default_factory=dict)  # the job's overrides, {key: value}: config["sweep_axes"]


def run_id(run_dir: Path) -> str:
    """The job folder's W&B run id: created once, so a job run again in its folder continues its run."""
    path = run_dir / RUN_ID_FILE
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4) + "\n")  # W&B ids: lower-case letters and digits
    return path.read_text().strip()


def wandb_arguments(logger_cfg, identity: RunIdentity) -> dict:
    """logger.* as WandbLogger arguments: the config's own keys win over what the identity derives."""
    from omegaconf import OmegaConf

    configured = {key: value for key, value in OmegaConf.to_container(logger_cfg, resolve=True).items()
                  if key not in OWN_KEYS and value is not None}
    tags = sorted({*identity.tags, *(logger_cfg.get("tags") or [])})
    derived = {"group": identity.group, "job_type": identity.job_type, "notes": identity.notes}
    return {**{k: v for k, v in derived.items() if v is not None}, **configured,
            "name": logger_cfg.get("run_name") or identity.name, "tags": tags}


class ExperimentTracker:
    def __init__(self, logger_cfg, run_dir: Path, identity: RunIdentity | str, config: dict):
        if logger_cfg.name not in LOGGERS:
            raise ConfigError("logger.name", f"unknown logger '{logger_cfg.name}'", f"use logger= one of {', '.join(LOGGERS)}")
        self.kind = logger_cfg.name
        self.run_dir = Path(run_dir)
        identity = identity if isinstance(identity, RunIdentity) else RunIdentity(identity)
        self.lightning_logger = self.make_logger(logger_cfg, identity, config)

    def make_logger(self, logger_cfg, identity: RunIdentity, config: dict):
        if self.kind == "wandb":
            wandb_logger = WandbLogger(
                save_dir=str(self.run_dir), mode=wandb_mode(logger_cfg.get("mode")), id=run_id(self.run_dir),
                resume="allow", config={**config, "sweep_axes": identity.axes},
                **wandb_arguments(logger_cfg, identity),
            )
            # Lightning passes anonymous=None, which wandb now warns about ("has no effect") in every run.
            getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)
            wandb_logger.experiment  # starts the run now: a job that fails early still has one
            return wandb_logger
        if self.kind == "csv":
            return CSVLogger(str(self.run_dir), name="csv")
        return False

    def log_results(self, result: JobResult) -> None:
        if not self.lightning_logger:
            return
        values = logged_values(result)
        if self.kind == "wandb":
            self.define_summaries(values)
        self.lightning_logger.log_metrics(values)
        if self.kind == "wandb":
            self.log_wandb_table(result)

    def define_summaries(self, values: dict) -> None:
        """Effectiveness metrics keep their best value as the run's summary (the runs table sorts by it)."""
        run = self.lightning_logger.experiment
        for name in values:
            if is_maximised(name):
                run.define_metric(name, summary="max")

    def log_wandb_table(self, result: JobResult) -> None:
        import wandb

        from splade_peft.summary import summary_rows, SUMMARY_COLUMNS

        table = wandb.Table(columns=SUMMARY_COLUMNS, data=summary_rows(result))
        self.lightning_logger.experiment.log({"test/summary": table})

    def log_artifacts(self, status: str) -> None:
        """The adapter (type model) and what the evaluation wrote (type evaluation), named after the run."""
        import wandb

        run = wandb.run
        if run is None:
            return
        adapter = self.run_dir / "adapter"
        if status == COMPLETED and adapter.is_dir():
            artifact = wandb.Artifact(f"adapter-{run.id}", type="model", metadata={"run_dir": str(self.run_dir)})
            artifact.add_dir(str(adapter))
            run.log_artifact(artifact)
        evaluation = [self.run_dir / RESULTS_FILE, self.run_dir / PER_QUERY_FILE,
                      *sorted((self.run_dir / "eval").glob("*/run.trec"))]
        if any(path.exists() for path in evaluation):
            artifact = wandb.Artifact(f"evaluation-{run.id}", type="evaluation", metadata={"status": status})
            for path in filter(Path.exists, evaluation):
                artifact.add_file(str(path), name=str(path.relative_to(self.run_dir)))
            run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        if self.kind == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.run.summary["status"] = status
                self.log_artifacts(status)
            wandb.finish(exit_code=0 if status == COMPLETED else 1)
        elif self.kind == "csv":
            self.lightning_logger.save()
