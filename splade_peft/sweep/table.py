"""The study table in Markdown, shaped like the rank table of the research notes: one row per grid point,
MRR@10 / R@1000 / nDCG@10 per dataset, the average, and what each point cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from splade_peft.sweep.load import AVERAGE, COMPLETED, METRIC_LABELS, Sweep, as_number, display_value

TABLE_METRICS = ("mrr@10", "recall@1000", "ndcg@10")
DECIMALS = 3  # as in the research notes; "best" is decided on the value shown
LEGEND = (
    f"**Bold**: the best value of a quality column among the grid rows, compared at {DECIMALS} decimals "
    "(ties are all bold; no mark when all rows are equal); reference rows (BM25, the zero-shot starting "
    "checkpoint) are never ranked. Cost columns are not marked: `plot_quality_vs_cost.png` draws the "
    "quality/cost Pareto front. doc nnz: non-zero weights per document, mean over documents, averaged "
    "over datasets; train s: training wall-clock seconds. Failed or unfinished jobs show their status, "
    "their folder and the first line of their error."
)


@dataclass
class Column:
    header: str
    source: str  # a column of Sweep.frame / Sweep.references
    format: Callable[[float], str]
    quality: bool  # quality columns get the best value in bold; cost columns are left unmarked


def metric_cell(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def count_cell(value: float) -> str:
    return f"{value:,.0f}"


def one_decimal_cell(value: float) -> str:
    return f"{value:,.1f}"


def table_columns(sweep: Sweep) -> list[Column]:
    columns = [
        Column(f"{dataset} {METRIC_LABELS[metric]}", f"{dataset}/{metric}", metric_cell, True)
        for dataset in sweep.datasets for metric in TABLE_METRICS
    ]
    if len(sweep.datasets) > 1:
        columns.append(Column(f"avg {METRIC_LABELS[sweep.metric]}", f"{AVERAGE}/{sweep.metric}", metric_cell, True))
    return columns + [
        Column("doc nnz", f"{AVERAGE}/doc_nnz_mean", one_decimal_cell, False),
        Column("trainable params", "params.trainable", count_cell, False),
        Column("train s", "timing.train_s", one_decimal_cell, False),
    ]


def grid_headers(sweep: Sweep) -> list[str]:
    return sweep.swept or ["job"]


def best_values(sweep: Sweep, columns: list[Column]) -> dict[str, float]:
    """The best shown value of each quality column among completed grid rows (references excluded);
    none where nothing stands out: fewer than two rows with a value, or all of them equal."""
    best = {}
    for column in columns:
        if column.quality and column.source in sweep.completed:
            shown = {round(value, DECIMALS) for value in map(as_number, sweep.completed[column.source]) if value is not None}
            if len(shown) > 1:
                best[column.source] = max(shown)
    return best


def measured_cells(row: pd.Series, columns: list[Column], best: dict[str, float]) -> list[str]:
    cells = []
    for column in columns:
        value = as_number(row.get(column.source))
        if value is None:
            cells.append("-")
        elif column.source in best and round(value, DECIMALS) == best[column.source]:
            cells.append(f"**{column.format(value)}**")
        else:
            cells.append(column.format(value))
    return cells


def status_cell(row: pd.Series) -> str:
    """"completed", or the status, the job folder (where error.log lies) and the error's first line."""
    if row["status"] == COMPLETED:
        return COMPLETED
    error = str(row.get("error") or "").strip().splitlines()
    return f"{row['status']} ({row['job']})" + (f": {error[0]}" if error else "")


def escape(cell: Any) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def markdown_row(cells: list[Any]) -> str:
    return "| " + " | ".join(escape(cell) for cell in cells) + " |"


def reference_rows(sweep: Sweep, columns: list[Column]) -> list[list[str]]:
    padding = [""] * (len(grid_headers(sweep)) - 1)
    return [
        [f"{label} (reference)", *padding, *measured_cells(row, columns, best={}), "reference"]
        for label, row in sweep.references.iterrows()
    ]


def grid_rows(sweep: Sweep, columns: list[Column]) -> list[list[str]]:
    best = best_values(sweep, columns)
    return [
        [*(display_value(row[key]) for key in grid_headers(sweep)), *measured_cells(row, columns, best), status_cell(row)]
        for _, row in sweep.frame.iterrows()
    ]


def study_table(sweep: Sweep) -> str:
    """Reference rows first, then one row per job in grid order."""
    columns = table_columns(sweep)
    headers = [*grid_headers(sweep), *(column.header for column in columns), "status"]
    rows = reference_rows(sweep, columns) + grid_rows(sweep, columns)
    return "\n".join([markdown_row(headers), markdown_row(["---"] * len(headers)), *map(markdown_row, rows)])


def title(sweep: Sweep) -> str:
    name, question = sweep.settings.get("sweep.name"), sweep.settings.get("sweep.question")
    heading = f"# Sweep report: {name or ' x '.join(sweep.swept) or sweep.directory.name}"
    return heading + (f"\n\n> {question}" if question else "")


def job_counts(sweep: Sweep) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in sweep.frame["status"].value_counts().items())
    return f"{len(sweep.frame)} jobs" + (f": {counts}" if counts else "")


def overview(sweep: Sweep) -> list[str]:
    swept = ", ".join(f"`{key}`" for key in sweep.swept) or "nothing (all jobs share their overrides)"
    fixed = ", ".join(f"`{key}={value}`" for key, value in sweep.fixed.items()) or "-"
    return [
        f"sweep folder: `{sweep.directory}` ({job_counts(sweep)})",
        f"swept: {swept}",
        f"fixed: {fixed}",
        f"study metric: {METRIC_LABELS[sweep.metric]} (macro average over {', '.join(sweep.datasets) or 'no datasets'})",
    ]


def markdown_report(sweep: Sweep, plot_names: Sequence[str] = ()) -> str:
    """The whole report.md: title, what was swept and fixed, the table, its legend, the plots."""
    parts = [title(sweep), "\n".join(line + "  " for line in overview(sweep)), study_table(sweep), LEGEND]
    if plot_names:
        parts.append("## Plots\n\n" + "\n".join(f"![{name}]({name})" for name in plot_names))
    return "\n\n".join(parts) + "\n"
