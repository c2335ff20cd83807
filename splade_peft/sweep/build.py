"""A sweep's report: sweep_results.csv, report.md and the plots, written into the sweep folder; and,
separately, the same table and plots logged to W&B as one run of the sweep's group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from splade_peft.sweep.load import Sweep, load_sweep
from splade_peft.sweep.plots import save_plots
from splade_peft.sweep.points import JOBS
from splade_peft.sweep.table import markdown_report, study_table
from splade_peft.tracking import wandb_mode

CSV_NAME = "sweep_results.csv"
MARKDOWN_NAME = "report.md"
DEFAULT_WANDB_PROJECT = "splade_peft"


@dataclass
class Report:
    sweep: Sweep
    table: str  # the study table alone (Markdown)
    markdown: str  # all of report.md
    csv_path: Path
    markdown_path: Path
    plot_paths: list[Path]

    @property
    def paths(self) -> list[Path]:
        return [self.csv_path, self.markdown_path, *self.plot_paths]


def build_report(sweep_dir: str | Path) -> Report:
    """Read every job of the sweep and write sweep_results.csv, report.md and plot_*.png beside them."""
    sweep = load_sweep(sweep_dir)
    csv_path, markdown_path = sweep.directory / CSV_NAME, sweep.directory / MARKDOWN_NAME
    sweep.frame.to_csv(csv_path, index=False)
    plot_paths = save_plots(sweep, sweep.directory)
    markdown = markdown_report(sweep, [path.name for path in plot_paths])
    markdown_path.write_text(markdown)
    return Report(sweep, study_table(sweep), markdown, csv_path, markdown_path, plot_paths)


def wandb_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """W&B tables type each column from its values: missing cells become None, not float NaN in a text column."""
    return frame.astype(object).where(frame.notna(), None)


def log_report_to_wandb(report: Report, project: str | None = None, group: str | None = None) -> bool:
    """Log the results table and the plots as one W&B run (job_type "report") in the sweep's group.

    Does nothing and returns False when the jobs did not log to W&B (config.logger.name) or wandb is not
    installed. project and group default to the jobs' logger.project and logger.group / sweep.wandb_group.
    """
    if not report.sweep.logged_to_wandb:
        return False
    try:
        import wandb
    except ImportError:
        return False
    settings = report.sweep.settings
    wandb.init(
        project=project or settings.get("logger.project") or DEFAULT_WANDB_PROJECT,
        group=group or report.sweep.wandb_group,
        job_type="report",
        name=f"report-{settings.get('sweep.name') or report.sweep.directory.name}",
        dir=str(report.sweep.directory),
        mode=wandb_mode(os.environ.get("WANDB_MODE")),
        config={"sweep_dir": str(report.sweep.directory), "swept": report.sweep.swept, "fixed": report.sweep.fixed},
    )
    wandb.log({
        "sweep/results": wandb.Table(dataframe=wandb_ready(report.sweep.frame)),
        "sweep/points": wandb.Table(dataframe=wandb_ready(report.sweep.points.drop(columns=JOBS))),
        **{f"sweep/{path.stem}": wandb.Image(str(path)) for path in report.plot_paths},
    })
    wandb.finish()
    return True
