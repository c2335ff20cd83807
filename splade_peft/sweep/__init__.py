"""Sweep reports: gather a Hydra multirun's results.json files into a CSV, a Markdown study table, plots,
and optionally one W&B run.

    report = build_report("outputs/sweeps/rank")   # writes sweep_results.csv, report.md, plot_*.png
    log_report_to_wandb(report)                     # only when the jobs logged to W&B
"""

from splade_peft.sweep.load import Sweep, latest_sweep, load_sweep
from splade_peft.sweep.plots import metric_vs_axis_figure, pareto_front, quality_vs_cost_figure, sweep_figures
from splade_peft.sweep.build import Report, build_report, log_report_to_wandb
from splade_peft.sweep.table import markdown_report, significance_section, study_table

__all__ = [
    "Report", "Sweep", "build_report", "latest_sweep", "load_sweep", "log_report_to_wandb", "markdown_report",
    "metric_vs_axis_figure", "pareto_front", "quality_vs_cost_figure", "significance_section", "study_table",
    "sweep_figures",
]
