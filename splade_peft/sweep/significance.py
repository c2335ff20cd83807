"""Effect or noise: every row's paired difference to the zero-shot row and to the study's best row.

Pairs are queries. A row's difference is the macro average over the evaluation datasets of its mean
per-query difference on the study metric, the figure the study table's average column differs by: each
query's difference is weighted 1 / (datasets x queries of its dataset), so every dataset counts once
whatever its size. A seed-collapsed row pairs its per-query values averaged over its seeds.

The test is a paired t-test (scipy.stats.ttest_rel) over those weighted per-query values. Each family of
comparisons (against zero-shot, against the best row) is Bonferroni-corrected for the number of rows it
compares: p-values are multiplied by that number and the intervals widened to match, so a 95% interval
that holds 0 is exactly an "n.s." difference.

Each row is compared with its own zero-shot: the zero-shot row of its jobs, which is the shared zero-shot
row unless the grid changes the zero-shot model itself (pooling, attention mask, backbone): then there is no
shared zero-shot row, and BM25 is compared with none.

With several evaluation datasets, each row is also compared with zero-shot on each dataset alone
(`vs_zero_shot@<dataset>`, one family per dataset): a gain in domain must not hide a loss out of domain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from splade_peft.results import AVERAGE, COMPLETED
from splade_peft.sweep.points import JOBS

ALPHA = 0.05
ZERO_SHOT, BM25 = "zero-shot", "BM25"
SYSTEMS = {"bm25": BM25, "zero_shot": ZERO_SHOT}  # per_query.json rows -> reference labels
VS_ZERO_SHOT, VS_BEST = "vs_zero_shot", "vs_best"
FIELDS = ("diff", "ci_low", "ci_high", "p_adjusted", "significant", "queries")

ByQuery = dict[str, dict[str, float]]  # dataset -> query id -> value


@dataclass(frozen=True)
class Comparison:
    diff: float
    ci_low: float
    ci_high: float
    p_adjusted: float
    queries: int

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA

    def columns(self, prefix: str) -> dict:
        return {f"{prefix}.{name}": getattr(self, name) for name in FIELDS}


def weighted_pairs(row: ByQuery, other: ByQuery) -> tuple[np.ndarray, np.ndarray]:
    """Both rows' values on the queries they share, scaled so that the mean difference is the macro average."""
    shared = {dataset: sorted(set(row[dataset]) & set(other[dataset])) for dataset in row if dataset in other}
    shared = {dataset: queries for dataset, queries in shared.items() if queries}
    total = sum(map(len, shared.values()))
    weights = [total / (len(shared) * len(queries)) for queries in shared.values() for _ in queries]
    pairs = [(row[d][q], other[d][q]) for d, queries in shared.items() for q in queries]
    values = np.array(pairs, dtype=float).reshape(-1, 2) * np.array(weights).reshape(-1, 1)
    return values[:, 0], values[:, 1]


def compare(row: ByQuery, other: ByQuery, comparisons: int) -> Comparison | None:
    """row - other, Bonferroni-corrected for `comparisons`; None with fewer than two shared queries."""
    a, b = weighted_pairs(row, other)
    if len(a) < 2:
        return None
    diff = float(np.mean(a - b))
    if np.ptp(a - b) == 0:  # no spread: the t statistic is undefined, the difference is exact
        return Comparison(diff, diff, diff, 1.0 if diff == 0 else 0.0, len(a))
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(confidence_level=1 - ALPHA / comparisons)
    return Comparison(diff, float(interval.low), float(interval.high), min(1.0, float(test.pvalue) * comparisons), len(a))


def seed_mean(runs: list[ByQuery]) -> ByQuery:
    """Per-query values averaged over seeds, on the datasets and queries every seed has."""
    if not runs:
        return {}
    datasets = set.intersection(*(set(run) for run in runs))
    return {
        dataset: {q: sum(run[dataset][q] for run in runs) / len(runs) for q in set.intersection(*(set(run[dataset]) for run in runs))}
        for dataset in datasets
    }


def row_values(per_query: Mapping, row: str, metric: str) -> ByQuery:
    return {dataset: by_metric[metric] for dataset, by_metric in per_query.get(row, {}).items() if by_metric.get(metric)}


def point_rows(points: pd.DataFrame, per_query_by_job: Mapping[str, Mapping], metric: str, row: str) -> dict:
    """One per_query.json row ("trained", "zero_shot") of every completed point, seed-averaged."""
    found = {}
    for index, point in points[points["status"] == COMPLETED].iterrows():
        runs = [row_values(per_query_by_job.get(job, {}), row, metric) for job in point[JOBS]]
        if runs and all(runs):
            found[index] = seed_mean(runs)
    return found


def candidates(points: pd.DataFrame, per_query_by_job: Mapping[str, Mapping], metric: str,
               zero_shot_shared: bool) -> tuple[dict, dict]:
    """Per-query values of every row that has them (reference labels and point indices as keys), and each
    point's own zero-shot values; no shared zero-shot row when the points' zero-shots differ."""
    found = {}
    for system, label in SYSTEMS.items():
        values = next((v for per_query in per_query_by_job.values() if (v := row_values(per_query, system, metric))), {})
        if values:
            found[label] = values
    found.update(point_rows(points, per_query_by_job, metric, "trained"))
    own_zero_shot = point_rows(points, per_query_by_job, metric, "zero_shot")
    if not zero_shot_shared:
        found.pop(ZERO_SHOT, None)
    return found, own_zero_shot


def best_point(points: pd.DataFrame, found: dict, metric: str):
    """The point with the highest study-metric average among those with per-query values."""
    column = f"{AVERAGE}/{metric}"
    scored = [(points.at[key, column], key) for key in found if not isinstance(key, str) and column in points
              and not math.isnan(float(points.at[key, column]))]
    return max(scored)[1] if scored else None


def family(found: dict, anchors: Mapping, prefix: str) -> dict:
    """Every row that has an anchor against it, corrected for the number of rows compared."""
    compared = {key: anchor for key, anchor in anchors.items() if key in found and anchor}
    results = {key: compare(found[key], anchor, len(compared)) for key, anchor in compared.items()}
    return {key: result.columns(prefix) for key, result in results.items() if result is not None}


def zero_shot_anchors(found: dict, own_zero_shot: dict) -> dict:
    """Each point's own zero-shot; BM25 against the shared zero-shot row, when there is one."""
    shared = found.get(ZERO_SHOT)
    return {key: own_zero_shot.get(key, shared) for key in found if key != ZERO_SHOT}


def best_anchors(found: dict, best) -> dict:
    return {key: found[best] for key in found if key != best} if best in found else {}


def dataset_prefix(dataset: str) -> str:
    return f"{VS_ZERO_SHOT}@{dataset}"


def per_dataset_families(found: dict, anchors: dict) -> dict:
    """Every row against its zero-shot on each dataset alone, when there is more than one dataset."""
    datasets = sorted({dataset for values in found.values() for dataset in values})
    if len(datasets) < 2:
        return {}
    columns: dict = {}
    for dataset in datasets:
        def alone(values: ByQuery | None) -> ByQuery:
            return {dataset: values[dataset]} if values and dataset in values else {}

        one = {key: alone(values) for key, values in found.items()}
        for key, values in family(one, {key: alone(anchor) for key, anchor in anchors.items()}, dataset_prefix(dataset)).items():
            columns.setdefault(key, {}).update(values)
    return columns


def add_comparisons(frame: pd.DataFrame, points: pd.DataFrame, references: pd.DataFrame,
                    per_query_by_job: Mapping[str, Mapping], metric: str,
                    zero_shot_shared: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The comparison columns (`vs_zero_shot.diff`, `vs_best.p_adjusted`, ...) on the points, the
    reference rows and each job's row (its point's comparison); nothing when no job kept per-query values."""
    found, own_zero_shot = candidates(points, per_query_by_job, metric, zero_shot_shared)
    to_zero_shot = zero_shot_anchors(found, own_zero_shot)
    columns: dict = {}
    for prefix, anchors in ((VS_ZERO_SHOT, to_zero_shot), (VS_BEST, best_anchors(found, best_point(points, found, metric)))):
        for key, values in family(found, anchors, prefix).items():
            columns.setdefault(key, {}).update(values)
    for key, values in per_dataset_families(found, to_zero_shot).items():
        columns.setdefault(key, {}).update(values)
    if not columns:
        return frame, points, references
    points = points.join(pd.DataFrame.from_dict({k: v for k, v in columns.items() if not isinstance(k, str)}, orient="index"))
    compared = [column for column in points.columns if column.startswith((VS_ZERO_SHOT, f"{VS_BEST}."))]
    point_of_job = {job: point for point, jobs in points[JOBS].items() for job in jobs}
    frame = pd.concat([frame, points.loc[frame["job"].map(point_of_job), compared].set_axis(frame.index)], axis=1)
    labelled = pd.DataFrame.from_dict({k: v for k, v in columns.items() if isinstance(k, str)}, orient="index")
    return frame, points, references.join(labelled) if not references.empty else references
