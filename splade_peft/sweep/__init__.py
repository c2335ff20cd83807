"""Sweep reports: gather a Hydra multirun's results.json files into a CSV, a Markdown study table, plots,
and optionally one W&B run.

    sweep = load_sweep("outputs/sweeps/rank")     # the job folders read: one row per job and per grid point
    study = run_study(sweep)                      # the paired comparisons under the study's protocol
    report = build_report("outputs/sweeps/rank")  # both, written: sweep_results.csv, comparisons.csv, report.md, plot_*.png
    log_report_to_wandb(report)                   # only when the jobs logged to W&B
"""

from splade_peft.sweep.load import Sweep, latest_sweep, load_sweep
from splade_peft.sweep.significance import Study, run_study
from splade_peft.sweep.plots import metric_vs_axis_figure, pareto_front, quality_vs_cost_figure, sweep_figures
from splade_peft.sweep.build import Report, build_report, log_report_to_wandb
from splade_peft.sweep.table import markdown_report, significance_section, study_table

__all__ = [
    "Report", "Study", "Sweep", "build_report", "latest_sweep", "load_sweep", "log_report_to_wandb", "markdown_report",
    "metric_vs_axis_figure", "pareto_front", "quality_vs_cost_figure", "run_study", "significance_section", "study_table",
    "sweep_figures",
]
