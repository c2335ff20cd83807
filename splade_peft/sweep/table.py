"""The study table in Markdown, shaped like the LoRA rank table (RESULTS.md, Findings we build on): one row per
grid point, MRR@10 / R@1000 / nDCG@10 per dataset, the average, and what each point cost."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from splade_peft.data.exposure import EXPOSED, SEEN, UNSEEN
from splade_peft.labels import ZERO_SHOT
from splade_peft.results import AVERAGE, COMPLETED, SUITE_PREFIX, as_number
from splade_peft.sweep.load import DEV_PREFIX, METRIC_LABELS, QUERY_GROUPS, ZERO_SHOT_PREFIX, Sweep
from splade_peft.sweep.paired import EXACT_PATTERNS, MONTE_CARLO_ERROR, RESAMPLES
from splade_peft.sweep.points import SEEDS, std_column
from splade_peft.sweep.significance import (
    ALL_QUERIES, ALPHA, DECLARED, GRID, INCONCLUSIVE, INFERIOR, NON_INFERIOR, VS_BEST, Study,
)
from splade_peft.sweep.values import display_value

Record = Mapping[str, Any]  # one record of the study's long table of comparisons ({} for none)
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
    # The dev figure first: what the study chooses on (a selection-stage sweep has no other quality column).
    dev = f"{DEV_PREFIX}{sweep.metric}"
    columns = [Column(f"dev {METRIC_LABELS[sweep.metric]}", dev, metric_cell, True)] if dev in sweep.points else []
    columns += [
        Column(f"{dataset} {METRIC_LABELS[metric]}", f"{dataset}/{metric}", metric_cell, True)
        for dataset in sweep.datasets for metric in TABLE_METRICS
    ]
    if len(sweep.datasets) > 1:
        columns.append(Column(f"avg {METRIC_LABELS[sweep.metric]}", f"{AVERAGE}/{sweep.metric}", metric_cell, True))
    # Suites beside the datasets: the notes' in-domain and "BEIR avg" columns side by side.
    columns += [Column(f"{column.split('/', 1)[0].removeprefix(SUITE_PREFIX)} avg {METRIC_LABELS[sweep.metric]}", column,
                       metric_cell, True) for column in sweep.points
                if column.startswith(SUITE_PREFIX) and column.endswith(f"/{sweep.metric}")]
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


def tied_with_best(study: Study, index: Any) -> bool:
    """No significant difference to the study's best row (which itself has no comparison to itself)."""
    record = study.comparison(index, kind=VS_BEST)
    return record is not None and not pd.isna(record["significant"]) and not bool(record["significant"])


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


def measured_cells(row: pd.Series, columns: list[Column], best: dict[str, float], decided_on: str = "",
                   tied: bool = False) -> list[str]:
    cells = []
    for column in columns:
        value = as_number(row.get(column.source))
        if value is None:
            cells.append("-")
            continue
        spread = as_number(row.get(std_column(column.source))) if column.quality else None
        cell = column.format(value) + (f" ± {column.format(spread)}" if spread is not None else "")
        is_best = column.source in best and round(value, DECIMALS) == best[column.source]
        cells.append(f"**{cell}**" if is_best or (column.source == decided_on and tied) else cell)
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


def grid_rows(sweep: Sweep, study: Study, columns: list[Column]) -> list[list[str]]:
    best, decided_on = best_values(sweep, columns), study_column(sweep)
    return [
        [*(display_value(row[key]) for key in grid_headers(sweep)),
         *measured_cells(row, columns, best, decided_on, tied_with_best(study, index)), status_cell(row)]
        for index, row in sweep.points.iterrows()
    ]


def study_table(sweep: Sweep, study: Study) -> str:
    """Reference rows first, then one row per grid point (seeds collapsed) or unfinished job, in grid order."""
    columns = table_columns(sweep)
    headers = [*grid_headers(sweep), *(column.header for column in columns), "status"]
    rows = reference_rows(sweep, columns) + grid_rows(sweep, study, columns)
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
        f"study metric: {METRIC_LABELS[sweep.metric]} " + (f"(macro average over {', '.join(sweep.datasets)})" if sweep.datasets
                                                          else "on dev only (a selection stage: no test split was opened)"),
    ]


# --- significance ----------------------------------------------------------------------------------------------

def comparison_cell(record: Record) -> str:
    """"+0.052 [+0.031, +0.073]", then "n.s." where the corrected p-value is not below ALPHA; "-" for no comparison."""
    diff = as_number(record.get("diff"))
    if diff is None:
        return "-"
    low, high = as_number(record.get("ci_low")), as_number(record.get("ci_high"))
    verdict = "" if bool(record.get("significant")) else " n.s."
    return f"{diff:+.{DECIMALS}f} [{low:+.{DECIMALS}f}, {high:+.{DECIMALS}f}]{verdict}"


def p_cell(record: Record) -> str:
    """The Holm-corrected p-value, with the uncorrected one beside it where Holm moved it (the interval
    agrees with that one); † marks a row outside the family (its p-value uncorrected)."""
    adjusted, raw = as_number(record.get("p_adjusted")), as_number(record.get("p"))
    if adjusted is None:
        return "-"
    if not bool(record.get("in_family")):
        return f"{adjusted:.3g} †"
    return f"{adjusted:.3g}" + (f" (uncorrected {raw:.3g})" if raw is not None and f"{raw:.3g}" != f"{adjusted:.3g}" else "")


def seeds_cell(row: pd.Series) -> str:
    return display_value(row.get(SEEDS, "")) if SEEDS in row else ""


def value_cell(row: pd.Series, column: str) -> str:
    """One metric value as the study table shows it (mean ± std over seeds), unmarked."""
    return measured_cells(row, [Column("", column, metric_cell, True)], {})[0]


def control_label(sweep: Sweep, study: Study) -> str:
    control = study.control
    if control == ZERO_SHOT:
        return f"each row's {ZERO_SHOT}"
    if control is None:
        return f"`{study.protocol.control}` (no completed row)"
    return sweep.grid_labels(sweep.points.loc[[control]])[0]


def best_tag(study: Study) -> str:
    return "best, chosen on dev" if study.best_on_dev else "best, chosen on test (selection figure)"


def row_label(study: Study, index, label: str) -> str:
    """The point's label, with its part in the study: control, best, or outside the family."""
    if index == study.control:
        return f"{label} (control)"
    tags = [best_tag(study)] if index == study.best else []
    if index not in study.family:
        tags.append("outside family")
    return f"{label} ({'; '.join(tags)})" if tags else label


def compared_rows(sweep: Sweep, study: Study) -> list[tuple[str, Any, pd.Series]]:
    """(label, key of its comparisons, values) of the reference rows, then of the completed grid rows."""
    rows = [(f"{label} (reference)", label, row) for label, row in sweep.references.iterrows()]
    completed = sweep.completed_points
    return rows + [(row_label(study, index, label), index, row)
                   for label, (index, row) in zip(sweep.grid_labels(completed), completed.iterrows())]


def seed_cells(record: Record) -> list[str]:
    """The seed noise and the query noise of the difference to the control, both as 95% half-widths, and the larger."""
    seed, query = (as_number(record.get(name)) for name in ("seed_half_width", "query_half_width"))
    cells = ["-" if value is None else metric_cell(value) for value in (seed, query)]
    return cells + ["-" if seed is None or query is None else "seeds" if seed > query else "queries"]


def significance_rows(sweep: Sweep, study: Study) -> list[list[str]]:
    column = study_column(sweep)
    rows = []
    for label, key, row in compared_rows(sweep, study):
        control, best = study.comparison(key) or {}, study.comparison(key, kind=VS_BEST) or {}
        rows.append([label, seeds_cell(row), value_cell(row, column), comparison_cell(control), p_cell(control),
                     *(seed_cells(control) if sweep.seeded else []), comparison_cell(best), p_cell(best)])
    return rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join([markdown_row(headers), markdown_row(["---"] * len(headers)), *map(markdown_row, rows)])


def verdict_cell(record: Record) -> str:
    """"non-inferior (lower bound -0.004)", "inferior (upper bound -0.015)", "inconclusive (-0.014 to +0.004)";
    "-" without a comparison."""
    verdict = record.get("verdict")
    low, high = as_number(record.get("lower_bound")), as_number(record.get("upper_bound"))
    if not isinstance(verdict, str) or low is None or high is None:
        return "-"
    if verdict == NON_INFERIOR:
        return f"{verdict} (lower bound {low:+.{DECIMALS}f})"
    if verdict == INFERIOR:
        return f"{verdict} (upper bound {high:+.{DECIMALS}f})"
    return f"{verdict} ({low:+.{DECIMALS}f} to {high:+.{DECIMALS}f})"


def per_dataset_table(sweep: Sweep, study: Study) -> str:
    """Each dataset's value and difference to the control side by side (in domain beside out of domain), with
    the non-inferiority verdict on the out-of-domain datasets."""
    scopes, judged_datasets = study.point_scopes(), study.judged_datasets()
    datasets = [d for d in sweep.datasets if (d, ALL_QUERIES) in scopes]
    judged = [d for d in datasets if d in judged_datasets]
    if not datasets or (len(datasets) < 2 and not judged):
        return ""
    metric, margin = METRIC_LABELS[sweep.metric], study.protocol.margin

    def headers_of(d: str) -> list[str]:
        return [f"{d} {metric}", "Δ vs control [95% CI]", "p"] + ([f"{d} verdict (margin {margin:g})"] if d in judged else [])

    def cells_of(key: Any, row: pd.Series, d: str) -> list[str]:
        record = study.comparison(key, d) or {}
        cells = [value_cell(row, f"{d}/{sweep.metric}"), comparison_cell(record), p_cell(record)]
        return cells + ([verdict_cell(record)] if d in judged else [])

    headers = ["row", SEEDS] + [header for d in datasets for header in headers_of(d)]
    rows = [[label, seeds_cell(row)] + [cell for d in datasets for cell in cells_of(key, row, d)]
            for label, key, row in compared_rows(sweep, study)]
    explanation = (
        "Each dataset alone against the control (paired over its queries, Holm-corrected per dataset over the "
        "family): an in-domain gain must not hide an out-of-domain loss."
    )
    if judged:
        explanation += (
            f" Out of domain ({', '.join(judged)}), from the same test's one-sided 95% bounds of (row - control): "
            f"**{NON_INFERIOR}** when the lower bound is above -{margin:g} (sweep.margin), **{INFERIOR}** when the "
            f"upper bound is below -{margin:g}, **{INCONCLUSIVE}** otherwise: \"n.s.\" alone is absence of evidence, "
            "not evidence of no loss."
        )
    return "\n\n".join(["### Per dataset", explanation, markdown_table(headers, rows)])


def group_cell(record: Record) -> str:
    queries = as_number(record.get("queries"))
    cell = comparison_cell(record)
    return cell if queries is None else f"{cell} ({queries:.0f} queries)"


def query_groups_table(sweep: Sweep, study: Study) -> str:
    """Each row's gain on the queries whose relevant documents training took as positives, pushed down as
    negatives, or never used."""
    scopes = study.point_scopes()
    grouped = [(d, group) for d in sweep.datasets for group in QUERY_GROUPS if (d, group) in scopes]
    if not grouped:
        return ""
    headers = ["row", SEEDS] + [h for d, group in grouped for h in (f"{d} {group} Δ vs control [95% CI]", "p")]
    rows = []
    for label, key, row in compared_rows(sweep, study):
        records = [study.comparison(key, d, group) or {} for d, group in grouped]
        if any(as_number(record.get("diff")) is not None for record in records):
            rows.append([label, seeds_cell(row)] + [cell for record in records for cell in (group_cell(record), p_cell(record))])
    explanation = (
        f"**{SEEN}**: queries whose every relevant document was a positive of a pair the job trained on; **{EXPOSED}**: "
        "queries none of whose relevant documents was a positive and some sat in the job's negative pools (training "
        f"pushed them down); **{UNSEEN}**: queries none of whose relevant documents training used (query_groups.json of "
        "each job, matched by text). Same test as above, Holm-corrected over the family within each group: a gain on "
        "seen documents alone is memory, not retrieval."
    )
    return "\n\n".join(["### Seen, exposed and unseen documents", explanation, markdown_table(headers, rows)])


def has_comparisons(study: Study) -> bool:
    return not study.tested_points().empty


def method_line(test: str) -> str:
    """The one test behind every p-value, interval and bound (splade_peft/sweep/paired.py), with its level."""
    if test == "t":
        return ("Test: paired t-test over queries (sweep.test=t); rows with several seeds add their seed standard "
                "error (Welch-Satterthwaite df). Intervals: the same t, 95% two-sided, so an interval holds 0 exactly "
                "when p >= 0.05; non-inferiority bounds: one-sided 95% (the 90% interval's ends).")
    return (f"Test: paired sign-flip randomization test of the mean difference over queries (sweep.test), exact over "
            f"every sign pattern when tied differences (zeros too) leave at most {EXACT_PATTERNS:,}, else {RESAMPLES:,} "
            f"random patterns with a fixed seed (Monte Carlo standard error of p near 0.05: {MONTE_CARLO_ERROR:.4f}). "
            "Rows with several seeds: each pattern adds a draw of the seed noise (the seed mean's standard error "
            "times a t(k-1) variate), so intervals and p cover seeds and queries. Intervals: the same test inverted "
            "(the shifts it does not reject), 95% two-sided, so an interval holds 0 exactly when p >= 0.05; "
            "non-inferiority bounds: one-sided 95% (the 90% interval's ends).")


def family_line(study: Study) -> str:
    """Which rows are corrected together and where that family comes from, as study_rows builds it."""
    source = {
        DECLARED: "the rows sweep.family names",
        GRID: "the points of the sweep's grid (multirun.yaml's sweeps and fixed overrides, seeds aside), whatever "
              "has completed; a job of another grid joining the folder stays outside and changes no row's p "
              "(Hydra rewrites multirun.yaml at each launch into the folder: a study that adds launches to one "
              "folder declares sweep.family)",
    }.get(study.family_source, "every row of the folder, completed or not (no multirun.yaml declares a grid): a job "
                               "joining the folder joins the family; declare sweep.family to fix it")
    line = (f"Family: {source}; Holm over its {study.family_size} rows against the control; reference rows and rows "
            "outside the family show their uncorrected p-value (†) and are never counted.")
    if study.missing:
        line += " Counted with p = 1 (no tested row): " + ", ".join(study.missing) + "."
    return line


def domain_line(sweep: Sweep, study: Study) -> str:
    judged = ", ".join(study.out_of_domain) or "none"
    if study.protocol.out_of_domain is not None:
        return f"Judged for non-inferiority (sweep.out_of_domain): {judged}."
    trained = ", ".join(sweep.trained_on) or "not recorded in the jobs' configs"
    return f"Trained on (data.name, data.mixture): {trained}; judged for non-inferiority: the other datasets, {judged}."


def protocol_lines(sweep: Sweep, study: Study) -> str:
    """What the rows were compared with, how, and over which family."""
    metric = METRIC_LABELS[sweep.metric]
    lines = [
        f"Control: {control_label(sweep, study)} (sweep.control). Paired over queries on {metric}: each difference is the "
        "macro average over the evaluation datasets of the mean per-query difference (each dataset counts once; "
        "seed-collapsed rows pair their per-query values averaged over seeds).",
        method_line(study.protocol.test) + " Intervals are uncorrected; **n.s.**: Holm-corrected p not below "
        f"{ALPHA:g} -- no difference shown, whatever the means say.",
        family_line(study),
        domain_line(sweep, study),
        "Δ vs best: against the family's best row, " + ("chosen on its dev figure (results.json `dev`)." if study.best_on_dev
                                                       else "chosen on test: a selection figure, no job reports a dev figure.")
        if study.best is not None else "Δ vs best: no family row has a value.",
    ]
    if sweep.seeded:
        lines.append("seed ± / query ±: the seed noise and the query noise of Δ vs control alone, each as a 95% "
                     "half-width; dominant: the larger.")
    return "  \n".join(lines)


def significance_section(sweep: Sweep, study: Study) -> str:
    """Each row's paired difference on the study metric to the control and to the best row, or why there is none."""
    if not has_comparisons(study):
        return "## Significance\n\nNo job kept per-query values (per_query.json): differences are not tested."
    metric = METRIC_LABELS[sweep.metric]
    seeds = ["seed ±", "query ±", "dominant"] if sweep.seeded else []
    headers = ["row", SEEDS, f"avg {metric}", "Δ vs control [95% CI]", "p", *seeds, "Δ vs best [95% CI]", "p"]
    parts = ["## Significance", protocol_lines(sweep, study), markdown_table(headers, significance_rows(sweep, study)),
             per_dataset_table(sweep, study), query_groups_table(sweep, study)]
    return "\n\n".join(part for part in parts if part)


def markdown_report(sweep: Sweep, study: Study, plot_names: Sequence[str] = ()) -> str:
    """The whole report.md: title, what was swept and fixed, the table, its legend, significance, the plots."""
    parts = [title(sweep), "\n".join(line + "  " for line in overview(sweep)), study_table(sweep, study), LEGEND,
             significance_section(sweep, study)]
    if plot_names:
        parts.append("## Plots\n\n" + "\n".join(f"![{name}]({name})" for name in plot_names))
    return "\n\n".join(parts) + "\n"
