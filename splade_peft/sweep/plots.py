"""Plots of a sweep: each quality metric against each swept axis, and quality against cost with its
Pareto front, and (with several evaluation datasets) the gain over the study's control on the first dataset against
the gain on each other one: the in-domain / out-of-domain trade-off. One point per grid point; repeated
seeds draw their mean with a standard-deviation error bar.

Figures are built with matplotlib's object API (`Figure`, no pyplot): nothing touches a display or the
global backend, saving a PNG goes through Agg, and a notebook can still show the returned figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from splade_peft.labels import BM25, ZERO_SHOT
from splade_peft.results import AVERAGE, as_number
from splade_peft.sweep.load import METRIC_LABELS, Sweep
from splade_peft.sweep.points import std_column
from splade_peft.sweep.significance import ALL_QUERIES, Study
from splade_peft.sweep.values import display_value, grid_sort_key, is_missing

PLOT_METRICS = ("ndcg@10", "mrr@10", "recall@1000")
COSTS = {
    "params.trainable": "trainable parameters",
    f"{AVERAGE}/doc_nnz_mean": "document non-zeros (mean)",
    "timing.train_s": "training time (s)",
}
REFERENCE_STYLES = {BM25: "--", ZERO_SHOT: ":"}
QUALITY_VS_COST = "plot_quality_vs_cost.png"
TRADE_OFF = "plot_trade_off.png"
DPI = 100


def pareto_front(quality: Sequence[float | None], cost: Sequence[float | None]) -> list[int]:
    """Indices of the points that no other point dominates (at least as good in quality, at most the cost,
    strictly better in one), ordered by cost. Points missing either value are left out."""
    points = [
        (index, q, c) for index, (q, c) in enumerate(zip(quality, cost))
        if as_number(q) is not None and as_number(c) is not None
    ]

    def dominated(q: float, c: float) -> bool:
        return any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for _, q2, c2 in points)

    return [index for index, q, c in sorted(points, key=lambda p: (p[2], -p[1])) if not dominated(q, c)]


def plot_name(metric: str, axis: str) -> str:
    """`plot_<metric>_vs_<axis>.png`, with characters a file name should not hold replaced."""
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9@._=-]", "_", text)

    return f"plot_{slug(metric)}_vs_{slug(axis)}.png"


def numeric(frame: pd.DataFrame, column: str) -> list[float | None]:
    if column not in frame:
        return [None] * len(frame)
    return [as_number(value) for value in frame[column]]


def spreads(frame: pd.DataFrame, column: str) -> list[float]:
    """Standard deviations over seeds, 0 where a point has a single seed (no bar)."""
    return [spread or 0.0 for spread in numeric(frame, std_column(column))]


# --- axis scales ------------------------------------------------------------------------------------------

def spans_decades(numbers: list[float]) -> bool:
    return min(numbers) > 0 and max(numbers) / min(numbers) >= 100


def axis_kind(values: list) -> str:
    """log2 for power-of-2 grids (ranks), log10 for positive grids spanning decades (learning rates),
    linear for other numbers, categorical for text (true/false, adapter names)."""
    numbers = [as_number(value) for value in values]
    if not numbers or None in numbers:
        return "categorical"
    if min(numbers) > 0 and len(set(numbers)) > 1 and all(math.log2(n).is_integer() for n in numbers):
        return "log2"
    return "log10" if spans_decades(numbers) else "linear"


def grid_values(values: pd.Series) -> list:
    """The distinct values of an axis in grid order."""
    return sorted(dict.fromkeys(value for value in values if not is_missing(value)), key=grid_sort_key)


def positions(values: pd.Series, kind: str, categories: list) -> list[float | None]:
    """x positions; None for a job that lacks the axis (it ran before the axis was added to the sweep)."""
    if kind == "categorical":
        index = {display_value(category): float(i) for i, category in enumerate(categories)}
        return [index.get(display_value(value)) for value in values]
    return [as_number(value) for value in values]


def style_x_axis(ax: Axes, kind: str, categories: list, label: str) -> None:
    if kind == "log2":
        ax.set_xscale("log", base=2)
    elif kind == "log10":
        ax.set_xscale("log")
    ticks = positions(pd.Series(categories, dtype=object), kind, categories)
    ax.set_xticks(ticks, [display_value(category) for category in categories])
    ax.xaxis.set_minor_locator(NullLocator())  # only the grid values are ticked
    if kind == "categorical":
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(label)


# --- metric vs axis -----------------------------------------------------------------------------------------

def series_names(sweep: Sweep) -> list[str]:
    return sweep.datasets + ([AVERAGE] if len(sweep.datasets) > 1 else [])


def panels(sweep: Sweep, axis: str) -> list[tuple[str, pd.DataFrame]]:
    """One panel per combination of the other swept keys, so that no line mixes two settings of them."""
    others = [key for key in sweep.grid_keys if key != axis]
    completed = sweep.completed_points
    if not others or completed.empty:
        return [("", completed)]
    groups = completed.groupby(others, sort=False, dropna=False)
    ordered = sorted(groups, key=lambda group: [grid_sort_key(value) for value in group[0]])
    return [(", ".join(f"{key}={display_value(value)}" for key, value in zip(others, values)), rows) for values, rows in ordered]


def draw_reference_lines(ax: Axes, references: pd.DataFrame, column: str, color: str = "grey") -> None:
    for label, row in references.iterrows():
        value = as_number(row.get(column))
        if value is not None:
            ax.axhline(value, color=color, linestyle=REFERENCE_STYLES.get(label, "-."), linewidth=1, alpha=0.8)


def draw_metric_panel(ax: Axes, sweep: Sweep, rows: pd.DataFrame, metric: str, axis: str, scale: tuple[str, list]) -> None:
    kind, categories = scale
    for index, series in enumerate(series_names(sweep)):
        column, color = f"{series}/{metric}", f"C{index}"
        points = sorted(
            (x, y, error) for x, y, error in zip(positions(rows[axis], kind, categories), numeric(rows, column), spreads(rows, column))
            if x is not None and y is not None
        )
        if points:
            xs, ys, errors = zip(*points)
            ax.errorbar(xs, ys, yerr=errors, marker="o", color=color, capsize=3)
        draw_reference_lines(ax, sweep.references, column, color)
    style_x_axis(ax, kind, categories, axis)
    ax.grid(alpha=0.3)


def reference_handles(sweep: Sweep) -> list[Line2D]:
    return [
        Line2D([], [], color="grey", linestyle=REFERENCE_STYLES.get(label, "-."), label=label)
        for label in sweep.references.index
    ]


def metric_legend(figure: Figure, sweep: Sweep) -> None:
    handles = [Line2D([], [], color=f"C{i}", marker="o", label=name) for i, name in enumerate(series_names(sweep))]
    handles += reference_handles(sweep)
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")


def metric_vs_axis_figure(sweep: Sweep, metric: str, axis: str) -> Figure:
    """One line per dataset (and their average), BM25 dashed and zero-shot dotted in the dataset's colour."""
    grid = panels(sweep, axis)
    columns = min(len(grid), 3)
    figure = Figure(figsize=(4.2 * columns + 1.8, 3.4 * math.ceil(len(grid) / columns)), layout="constrained")
    axes = figure.subplots(math.ceil(len(grid) / columns), columns, sharey=True, squeeze=False).flatten()
    categories = grid_values(sweep.completed_points[axis])
    scale = (axis_kind(categories), categories)
    for ax, (title, rows) in zip(axes, grid):
        if rows.empty:
            ax.text(0.5, 0.5, "no completed job", transform=ax.transAxes, ha="center")
        else:
            draw_metric_panel(ax, sweep, rows, metric, axis, scale)
        ax.set_title(title, fontsize="small")
        ax.set_ylabel(METRIC_LABELS[metric])
    for ax in axes[len(grid):]:
        ax.set_visible(False)
    metric_legend(figure, sweep)
    figure.suptitle(f"{METRIC_LABELS[metric]} vs {axis}")
    return figure


# --- quality vs cost ------------------------------------------------------------------------------------------

def draw_cost_panel(ax: Axes, quality: list, cost: list, labels: list[str], cost_label: str, errors: list[float]) -> None:
    points = [(c, q, label, e) for q, c, label, e in zip(quality, cost, labels, errors) if q is not None and c is not None]
    if not points:
        ax.text(0.5, 0.5, "no completed job reports this", transform=ax.transAxes, ha="center")
        ax.set_xlabel(cost_label)
        return
    ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[3] for p in points], fmt="o", color="C0",
                capsize=3, zorder=3)
    for c, q, label, _ in points:
        ax.annotate(label, (c, q), xytext=(4, 4), textcoords="offset points", fontsize=7)
    front = pareto_front(quality, cost)
    ax.plot([cost[i] for i in front], [quality[i] for i in front], color="C3", drawstyle="steps-post", zorder=2)
    ax.scatter(
        [cost[i] for i in front], [quality[i] for i in front], s=140, facecolors="none", edgecolors="C3",
        linewidths=1.5, zorder=4, label="Pareto front",
    )
    if spans_decades([p[0] for p in points]):
        ax.set_xscale("log")
    ax.margins(x=0.15)  # room for the labels of the right-most points
    ax.set_xlabel(cost_label)
    ax.grid(alpha=0.3)


def quality_vs_cost_figure(sweep: Sweep) -> Figure:
    """Average quality against trainable parameters, document non-zeros and training time; the Pareto
    front (highest quality for the least cost) is the red step line through the ringed points."""
    quality_column = f"{AVERAGE}/{sweep.metric}"
    completed = sweep.completed_points
    quality, labels = numeric(completed, quality_column), sweep.grid_labels(completed)
    errors = spreads(completed, quality_column)
    figure = Figure(figsize=(15, 4.8), layout="constrained")
    axes = figure.subplots(1, len(COSTS), sharey=True)
    for ax, (cost_column, cost_label) in zip(axes, COSTS.items()):
        draw_cost_panel(ax, quality, numeric(completed, cost_column), labels, cost_label, errors)
        draw_reference_lines(ax, sweep.references, quality_column)
    axes[0].set_ylabel(f"avg {METRIC_LABELS[sweep.metric]}")
    front = Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="C3", color="C3", label="Pareto front")
    handles = [front, *reference_handles(sweep)]
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle(f"avg {METRIC_LABELS[sweep.metric]} vs cost")
    return figure


# --- gain in one dataset against gain in another ------------------------------------------------------------

def gains(study: Study, rows: Sequence, dataset: str) -> tuple[list, list, list]:
    """Each row's paired difference to its control on `dataset`, with the distances to its interval's ends."""
    records = [study.comparison(row, dataset, ALL_QUERIES) or {} for row in rows]
    diff, low, high = ([as_number(record.get(field)) for record in records] for field in ("diff", "ci_low", "ci_high"))
    below = [d - lo if d is not None and lo is not None else 0.0 for d, lo in zip(diff, low)]
    above = [hi - d if d is not None and hi is not None else 0.0 for d, hi in zip(diff, high)]
    return diff, below, above


def draw_trade_off_panel(ax: Axes, sweep: Sweep, study: Study, first: str, other: str) -> None:
    completed = sweep.completed_points
    (x, x_below, x_above), (y, y_below, y_above) = gains(study, completed.index, first), gains(study, completed.index, other)
    rows = [(i, label) for i, label in enumerate(sweep.grid_labels(completed)) if x[i] is not None and y[i] is not None]
    for i, label in rows:
        ax.errorbar(x[i], y[i], xerr=[[x_below[i]], [x_above[i]]], yerr=[[y_below[i]], [y_above[i]]], fmt="o",
                    color="C0", capsize=3, zorder=3)
        ax.annotate(label, (x[i], y[i]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    if BM25 in sweep.references.index:
        (bx, _, _), (by, _, _) = gains(study, [BM25], first), gains(study, [BM25], other)
        if bx[0] is not None and by[0] is not None:
            ax.scatter(bx, by, marker="s", color="grey", zorder=3)
            ax.annotate(BM25, (bx[0], by[0]), xytext=(4, -10), textcoords="offset points", fontsize=7, color="grey")
    # The front keeps the rows no other beats on both datasets: the curve a recipe choice moves along.
    front = pareto_front([x[i] for i, _ in rows], [-y[i] for i, _ in rows])
    ax.plot([x[rows[j][0]] for j in front], [y[rows[j][0]] for j in front], color="C3", zorder=2)
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0, color="grey", linestyle=":", linewidth=1)
    metric = METRIC_LABELS[sweep.metric]
    ax.set_xlabel(f"{first} {metric} - control")
    ax.set_ylabel(f"{other} {metric} - control")
    ax.grid(alpha=0.3)


def trade_off_figure(sweep: Sweep, study: Study) -> Figure | None:
    """The gain over the control on the in-domain dataset (what the jobs trained on; else the first) (x) against
    each other dataset (y), with the 95% intervals of the per-dataset significance table; None without
    per-dataset comparisons."""
    in_domain = [d for d in sweep.datasets if d in sweep.trained_on] or sweep.datasets[:1]
    first = in_domain[0] if in_domain else ""
    others = [d for d in sweep.datasets if d != first]
    if not others or (first, ALL_QUERIES) not in study.point_scopes():
        return None
    figure = Figure(figsize=(5.2 * len(others), 4.6), layout="constrained")
    for ax, other in zip(figure.subplots(1, len(others), squeeze=False)[0], others):
        draw_trade_off_panel(ax, sweep, study, first, other)
    figure.suptitle(f"{METRIC_LABELS[sweep.metric]} gain over the control, {first} against the other datasets\n"
                    "95% intervals of the report's paired test (uncorrected); red line: rows no other beats on both",
                    fontsize="medium")
    return figure


# --- all plots ----------------------------------------------------------------------------------------------

def sweep_figures(sweep: Sweep, study: Study) -> dict[str, Figure]:
    """Every plot of the report, by file name."""
    figures = {
        plot_name(metric, axis): metric_vs_axis_figure(sweep, metric, axis)
        for metric in PLOT_METRICS for axis in sweep.grid_keys
    }
    figures[QUALITY_VS_COST] = quality_vs_cost_figure(sweep)
    if (trade_off := trade_off_figure(sweep, study)) is not None:
        figures[TRADE_OFF] = trade_off
    return figures


def save_plots(sweep: Sweep, study: Study, folder: Path) -> list[Path]:
    paths = []
    for name, figure in sweep_figures(sweep, study).items():
        figure.savefig(folder / name, dpi=DPI)
        paths.append(folder / name)
    return paths
