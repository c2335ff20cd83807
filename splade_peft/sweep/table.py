"""The study table in Markdown, shaped like the LoRA rank table (RESULTS.md, Findings we build on): one row per
grid point, MRR@10 / R@1000 / nDCG@10 per dataset, the average, and what each point cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from splade_peft.results import AVERAGE, COMPLETED, as_number
from splade_peft.sweep.load import METRIC_LABELS, ZERO_SHOT_PREFIX, Sweep
from splade_peft.sweep.points import SEEDS, std_column
from splade_peft.sweep.significance import ALPHA, VS_BEST, VS_ZERO_SHOT, ZERO_SHOT, dataset_prefix
from splade_peft.sweep.values import display_value

TABLE_METRICS = ("mrr@10", "recall@1000", "ndcg@10")
DECIMALS = 3  # as IR papers report nDCG/MRR; "best" is decided on the value shown
LEGEND = (
    f"**Bold**: the best value of a quality column among the grid rows, compared at {DECIMALS} decimals "
    "(ties are all bold; no mark when all rows are equal); reference rows (BM25, the zero-shot starting "
    "checkpoint) are never ranked; in the study-metric column, rows not significantly below the best "
    "(paired test, see Significance) are bold too: the best is not a winner over them. Repeated seeds show "
    "mean ± standard deviation over the `seeds` column's count. Cost columns are not marked: `plot_quality_vs_cost.png` draws the "
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
    # A grid that changes the zero-shot model shows each row's own zero-shot (there is no shared row then).
    columns += [Column(f"{dataset} zero-shot {METRIC_LABELS[sweep.metric]}", f"{ZERO_SHOT_PREFIX}{dataset}/{sweep.metric}", metric_cell, False)
                for dataset in sweep.datasets if f"{ZERO_SHOT_PREFIX}{dataset}/{sweep.metric}" in sweep.points]
    return columns + [
        Column("doc nnz", f"{AVERAGE}/doc_nnz_mean", one_decimal_cell, False),
        Column("trainable params", "params.trainable", count_cell, False),
        Column("train s", "timing.train_s", one_decimal_cell, False),
    ]


def grid_headers(sweep: Sweep) -> list[str]:
    return (sweep.grid_keys or ["job"]) + ([SEEDS] if sweep.seeded else [])


def study_column(sweep: Sweep) -> str:
    """The column the study is decided on: the macro average (what the average column shows)."""
    return f"{AVERAGE}/{sweep.metric}" if len(sweep.datasets) > 1 else f"{sweep.datasets[0] if sweep.datasets else AVERAGE}/{sweep.metric}"


def tied_with_best(row: pd.Series) -> bool:
    """No significant difference to the study's best row (which itself has no comparison to itself)."""
    significant = row.get(f"{VS_BEST}.significant")
    return significant is not None and not pd.isna(significant) and not bool(significant)


def best_values(sweep: Sweep, columns: list[Column]) -> dict[str, float]:
    """The best shown value of each quality column among completed grid rows (references excluded);
    none where nothing stands out: fewer than two rows with a value, or all of them equal."""
    best = {}
    completed = sweep.completed_points
    for column in columns:
        if column.quality and column.source in completed:
            shown = {round(value, DECIMALS) for value in map(as_number, completed[column.source]) if value is not None}
            if len(shown) > 1:
                best[column.source] = max(shown)
    return best


def measured_cells(row: pd.Series, columns: list[Column], best: dict[str, float], study: str = "") -> list[str]:
    cells = []
    for column in columns:
        value = as_number(row.get(column.source))
        if value is None:
            cells.append("-")
            continue
        spread = as_number(row.get(std_column(column.source))) if column.quality else None
        cell = column.format(value) + (f" ± {column.format(spread)}" if spread is not None else "")
        is_best = column.source in best and round(value, DECIMALS) == best[column.source]
        cells.append(f"**{cell}**" if is_best or (column.source == study and tied_with_best(row)) else cell)
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
    best, study = best_values(sweep, columns), study_column(sweep)
    return [
        [*(display_value(row[key]) for key in grid_headers(sweep)), *measured_cells(row, columns, best, study), status_cell(row)]
        for _, row in sweep.points.iterrows()
    ]


def study_table(sweep: Sweep) -> str:
    """Reference rows first, then one row per grid point (seeds collapsed) or unfinished job, in grid order."""
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


# --- significance ----------------------------------------------------------------------------------------------

def comparison_cell(row: pd.Series, prefix: str) -> str:
    """"+0.052 [+0.031, +0.073]", then "n.s." where the interval holds 0; "-" for no comparison."""
    diff = as_number(row.get(f"{prefix}.diff"))
    if diff is None:
        return "-"
    low, high = as_number(row.get(f"{prefix}.ci_low")), as_number(row.get(f"{prefix}.ci_high"))
    verdict = "" if bool(row.get(f"{prefix}.significant")) else " n.s."
    return f"{diff:+.{DECIMALS}f} [{low:+.{DECIMALS}f}, {high:+.{DECIMALS}f}]{verdict}"


def p_cell(row: pd.Series, prefix: str) -> str:
    p_value = as_number(row.get(f"{prefix}.p_adjusted"))
    return "-" if p_value is None else f"{p_value:.3g}"


def seeds_cell(row: pd.Series) -> str:
    return display_value(row.get(SEEDS, "")) if SEEDS in row else ""


def value_cell(row: pd.Series, column: str) -> str:
    """One metric value as the study table shows it (mean ± std over seeds), unmarked."""
    return measured_cells(row, [Column("", column, metric_cell, True)], {})[0]


def significance_rows(sweep: Sweep) -> list[list[str]]:
    column = study_column(sweep)
    return [
        [label, seeds_cell(row), value_cell(row, column),
         comparison_cell(row, VS_ZERO_SHOT), p_cell(row, VS_ZERO_SHOT), comparison_cell(row, VS_BEST), p_cell(row, VS_BEST)]
        for label, row in compared_rows(sweep)
    ]


def compared_rows(sweep: Sweep) -> list[tuple[str, pd.Series]]:
    rows = [(f"{label} (reference)", row) for label, row in sweep.references.iterrows()]
    return rows + list(zip(sweep.grid_labels(sweep.completed_points), (row for _, row in sweep.completed_points.iterrows())))


def per_dataset_table(sweep: Sweep) -> str:
    """Each dataset's value and difference to zero-shot side by side (in domain beside out of domain)."""
    datasets = [d for d in sweep.datasets if f"{dataset_prefix(d)}.diff" in sweep.points.columns]
    if len(datasets) < 2:
        return ""
    metric = METRIC_LABELS[sweep.metric]
    headers = ["row", SEEDS] + [header for d in datasets for header in (f"{d} {metric}", f"Δ vs {ZERO_SHOT} [95% CI]", "p")]
    rows = [
        [label, seeds_cell(row)]
        + [cell for d in datasets for cell in (value_cell(row, f"{d}/{sweep.metric}"),
                                               comparison_cell(row, dataset_prefix(d)), p_cell(row, dataset_prefix(d)))]
        for label, row in compared_rows(sweep)
    ]
    table = [markdown_row(headers), markdown_row(["---"] * len(headers)), *map(markdown_row, rows)]
    explanation = (f"Each dataset alone against {ZERO_SHOT} (paired over its queries, Bonferroni-corrected per "
                   "dataset for the rows compared): an in-domain gain must not hide an out-of-domain loss.")
    return "\n\n".join(["### Per dataset", explanation, "\n".join(table)])


def has_comparisons(sweep: Sweep) -> bool:
    return any(column.startswith((f"{VS_ZERO_SHOT}.", f"{VS_BEST}.")) for column in sweep.points.columns)


def significance_section(sweep: Sweep) -> str:
    """Each row's paired difference on the study metric to zero-shot and to the best row, or why there is none."""
    if not has_comparisons(sweep):
        return "## Significance\n\nNo job kept per-query values (per_query.json): differences are not tested."
    metric = METRIC_LABELS[sweep.metric]
    headers = ["row", SEEDS, f"avg {metric}", f"Δ vs {ZERO_SHOT} [95% CI]", "p", "Δ vs best [95% CI]", "p"]
    table = [markdown_row(headers), markdown_row(["---"] * len(headers)), *map(markdown_row, significance_rows(sweep))]
    explanation = (
        f"Paired over queries on {metric}: each difference is the macro average over the evaluation datasets "
        "of the mean per-query difference (each dataset counts once; seed-collapsed rows pair their "
        "per-query values averaged over seeds). Paired t-test (scipy.stats.ttest_rel); p-values and 95% "
        "intervals Bonferroni-corrected for the number of rows each column compares. "
        f"**n.s.**: not significant at {ALPHA:g} after correction, the interval holds 0 -- no difference shown, "
        "whatever the means say."
    )
    return "\n\n".join(part for part in ["## Significance", explanation, "\n".join(table), per_dataset_table(sweep)] if part)


def markdown_report(sweep: Sweep, plot_names: Sequence[str] = ()) -> str:
    """The whole report.md: title, what was swept and fixed, the table, its legend, significance, the plots."""
    parts = [title(sweep), "\n".join(line + "  " for line in overview(sweep)), study_table(sweep), LEGEND,
             significance_section(sweep)]
    if plot_names:
        parts.append("## Plots\n\n" + "\n".join(f"![{name}]({name})" for name in plot_names))
    return "\n\n".join(parts) + "\n"
