"""A sweep's report: sweep_results.csv, report.md and the plots, written into the sweep folder; and,
separately, the same table and plots logged to W&B as one run of the sweep's group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from splade_peft.labels import TRAINED
from splade_peft.results import AVERAGE, as_number
from splade_peft.sweep.load import DEV_PREFIX, Sweep, load_sweep
from splade_peft.sweep.plots import pareto_front, save_plots
from splade_peft.sweep.points import JOBS
from splade_peft.sweep.significance import Study, run_study
from splade_peft.sweep.table import markdown_report, study_table
from splade_peft.sweep.values import display_value
from splade_peft.tracking import wandb_mode

CSV_NAME = "sweep_results.csv"  # one row per job: its overrides, metrics and costs
COMPARISONS_NAME = "comparisons.csv"  # the study's comparisons, one row per row x dataset x group x comparison
MARKDOWN_NAME = "report.md"
DEFAULT_WANDB_PROJECT = "splade_peft"


@dataclass
class Report:
    sweep: Sweep
    study: Study
    table: str  # the study table alone (Markdown)
    markdown: str  # all of report.md
    csv_path: Path
    comparisons_path: Path
    markdown_path: Path
    plot_paths: list[Path]

    @property
    def paths(self) -> list[Path]:
        return [self.csv_path, self.comparisons_path, self.markdown_path, *self.plot_paths]


def build_report(sweep_dir: str | Path) -> Report:
    """Read every job of the sweep and write sweep_results.csv, comparisons.csv, report.md and plot_*.png beside them."""
    sweep = load_sweep(sweep_dir)
    study = run_study(sweep)
    csv_path, markdown_path = sweep.directory / CSV_NAME, sweep.directory / MARKDOWN_NAME
    comparisons_path = sweep.directory / COMPARISONS_NAME
    sweep.frame.to_csv(csv_path, index=False)
    study.comparisons.drop(columns="row").to_csv(comparisons_path, index=False)
    plot_paths = save_plots(sweep, study, sweep.directory)
    markdown = markdown_report(sweep, study, [path.name for path in plot_paths])
    markdown_path.write_text(markdown)
    return Report(sweep, study, study_table(sweep, study), markdown, csv_path, comparisons_path, markdown_path, plot_paths)


def wandb_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """W&B tables type each column from its values: missing cells become None, not float NaN in a text column."""
    return frame.astype(object).where(frame.notna(), None)


def log_report_to_wandb(report: Report, project: str | None = None, group: str | None = None) -> bool:
    """Log the study as one W&B run (job_type "report") in the sweep's group: its table, interactive charts
    (metric per swept axis beside the reference rows, quality against document non-zeros with the Pareto
    front, the significance of each point against the study's control) and the report files as an artifact.

    Does nothing and returns False when the jobs did not log to W&B (config.logger.name) or wandb is not
    installed. project and group default to the jobs' logger.project and their group (see tracking).
    """
    if not report.sweep.logged_to_wandb:
        return False
    try:
        import wandb
    except ImportError:
        return False
    sweep, study, settings = report.sweep, report.study, report.sweep.settings
    run = wandb.init(
        project=project or settings.get("logger.project") or DEFAULT_WANDB_PROJECT,
        group=group or sweep.wandb_group or settings.get("sweep.name") or sweep.directory.name,
        job_type="report",
        name=f"report-{settings.get('sweep.name') or sweep.directory.name}",
        notes=settings.get("sweep.question"),
        dir=str(sweep.directory),
        mode=wandb_mode(settings.get("logger.mode")),
        config={"sweep_dir": str(sweep.directory), "swept": sweep.swept, "fixed": sweep.fixed, "metric": sweep.metric},
    )
    wandb.log({
        "sweep/results": wandb.Table(dataframe=wandb_ready(sweep.frame)),
        "sweep/points": wandb.Table(dataframe=wandb_ready(sweep.points.drop(columns=JOBS))),
        "sweep/comparisons": wandb.Table(dataframe=wandb_ready(study.comparisons.drop(columns="row"))),
        **wandb_charts(sweep, study),
        **{f"sweep/{path.stem}": wandb.Image(str(path)) for path in report.plot_paths},
    })
    artifact = wandb.Artifact(f"report-{run.id}", type="report", metadata={"sweep_dir": str(sweep.directory)})
    for path in report.paths:
        artifact.add_file(str(path))
    run.log_artifact(artifact)
    wandb.finish()
    return True


# --- native W&B charts: interactive in the W&B UI, built from the same points as the PNG plots -------------

def wandb_charts(sweep: Sweep, study: Study) -> dict:
    import wandb

    quality = f"{AVERAGE}/{sweep.metric}"
    if quality not in sweep.completed_points:  # a selection-stage sweep: only dev figures
        quality = f"{DEV_PREFIX}{sweep.metric}"
    charts = {f"charts/{sweep.metric}_vs_{axis}": chart for axis in sweep.grid_keys
              if (chart := axis_chart(sweep, axis, quality)) is not None}
    charts.update(pareto_charts(sweep, quality))
    completed = sweep.completed_points
    records = [study.comparison(index) or {} for index in completed.index]
    rows = [[label, record["diff"], bool(record["significant"])] for label, record in zip(sweep.grid_labels(completed), records)
            if as_number(record.get("diff")) is not None]
    if rows:
        gain = f"{sweep.metric} - control"
        table = wandb.Table(columns=["point", gain, "significant"], data=rows)
        charts["charts/vs_control"] = wandb.plot.bar(table, "point", gain, title=f"{sweep.metric} gain over the control "
                                                     f"({study.protocol.test} test, Holm)")
    return charts


def axis_chart(sweep: Sweep, axis: str, quality: str):
    """The study metric against one swept axis: a line per row (trained, BM25, zero-shot) on a numeric axis,
    bars on a categorical one."""
    import wandb

    completed = sweep.completed_points
    if quality not in completed:
        return None
    values = [(value, score) for value, score in zip(completed[axis], completed[quality]) if as_number(score) is not None]
    references = {name: as_number(row.get(quality)) for name, row in sweep.references.iterrows()} if quality in sweep.references else {}
    if all(as_number(value) is not None for value, _ in values):
        rows = [[float(value), float(score), TRAINED] for value, score in values]
        rows += [[float(value), score, name] for name, score in references.items() if score is not None for value, _ in values]
        table = wandb.Table(columns=[axis, quality, "row"], data=sorted(rows, key=lambda row: (row[2], row[0])))
        return wandb.plot.line(table, axis, quality, stroke="row", title=f"{quality} vs {axis}")
    rows = [[f"{axis}={display_value(value)}", float(score)] for value, score in values]
    rows += [[name, score] for name, score in references.items() if score is not None]
    return wandb.plot.bar(wandb.Table(columns=[axis, quality], data=rows), axis, quality, title=f"{quality} vs {axis}")


def pareto_charts(sweep: Sweep, quality: str) -> dict:
    """Quality against document non-zeros per point, and the Pareto front through them (more quality, fewer non-zeros)."""
    import wandb

    cost = f"{AVERAGE}/doc_nnz_mean"
    completed = sweep.completed_points
    if cost not in completed or quality not in completed:
        return {}
    labels = sweep.grid_labels(completed)
    costs, qualities = [as_number(v) for v in completed[cost]], [as_number(v) for v in completed[quality]]
    rows = [[label, c, q] for label, c, q in zip(labels, costs, qualities) if c is not None and q is not None]
    if not rows:
        return {}
    columns = ["point", cost, quality]
    front = [[labels[i], costs[i], qualities[i]] for i in pareto_front(qualities, costs)]
    return {
        "charts/quality_vs_doc_nnz": wandb.plot.scatter(wandb.Table(columns=columns, data=rows), cost, quality,
                                                        title=f"{quality} vs document non-zeros"),
        "charts/pareto_front": wandb.plot.line(wandb.Table(columns=columns, data=front), cost, quality,
                                               title=f"Pareto front: {quality} vs document non-zeros"),
    }
