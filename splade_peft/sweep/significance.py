"""Effect or noise, under the study's declared protocol: every row's paired difference to the study's control.

The protocol is declared by the study (the `sweep` config section, read from the jobs' configs):
- `sweep.control`: the row every other is compared with: "zero_shot" (each row's own zero-shot) or an
  override naming one grid row ("loss.weights.kl=0");
- `sweep.family`: the rows whose comparisons are corrected together (null: every grid row but the control);
  reference rows (BM25, zero-shot, fusion) and grid rows outside the family are shown with their
  uncorrected p-value and never counted, so a row's p-value does not change with what else ran in the folder;
- `sweep.test`: "randomization" (a paired sign-flip permutation test over queries, the IR default) or "t"
  (the paired t-test);
- `sweep.margin`: the non-inferiority margin on the study metric;
- `sweep.out_of_domain`: the datasets whose verdict is non-inferiority (null: all but the first).

Pairs are queries. A row's difference is the macro average over the evaluation datasets of its mean
per-query difference on the study metric: each query's difference is weighted 1 / (datasets x queries of its
dataset), so every dataset counts once whatever its size. A seed-collapsed row pairs its per-query values
averaged over its seeds.

The randomization test flips the sign of each query's difference at random, RESAMPLES times with a fixed
seed (every comparison of n queries uses the same flips, so a p-value depends on its two rows alone), and
enumerates every flip when there are fewer than RESAMPLES; numpy rather than scipy.stats.permutation_test,
which took 0.3 s per comparison against about a millisecond here. p-values are Holm-corrected within each
family: one per scope (the macro average, each dataset alone, each dataset's seen and unseen queries) and
comparison (against the control, against the best row). Intervals are paired t intervals
(scipy.stats.ttest_1samp on the differences), uncorrected: 95% two-sided for the difference, 95% one-sided
for the non-inferiority bounds. "n.s." is decided by the corrected p-value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from splade_peft.config import SIGNIFICANCE_TESTS as TESTS
from splade_peft.errors import ConfigError
from splade_peft.results import AVERAGE, COMPLETED, as_number
from splade_peft.sweep.points import JOBS
from splade_peft.sweep.values import display_value, short_names

ALPHA = 0.05
RESAMPLES = 10_000
FLIP_SEED = 20
ZERO_SHOT_CONTROL = "zero_shot"
ZERO_SHOT, BM25 = "zero-shot", "BM25"
SYSTEMS = {"bm25": BM25, "zero_shot": ZERO_SHOT, "fusion": "BM25 + zero-shot"}  # per_query.json rows -> labels
VS_CONTROL, VS_BEST = "vs_control", "vs_best"
SEEN, UNSEEN = "seen", "unseen"
QUERY_GROUPS = (SEEN, UNSEEN)
NON_INFERIOR, WORSE, INCONCLUSIVE = "non-inferior", "worse", "inconclusive"
FIELDS = ("diff", "ci_low", "ci_high", "p", "p_adjusted", "significant", "in_family", "queries")
VERDICT_FIELDS = ("lower_bound", "upper_bound", "margin", "verdict")

ByQuery = dict[str, dict[str, float]]  # dataset -> query id -> value
Groups = dict[str, dict[str, set[str]]]  # dataset -> "seen"/"unseen" -> query ids


# --- the declared protocol ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    control: str = ZERO_SHOT_CONTROL
    family: tuple[str, ...] | None = None
    test: str = "randomization"
    margin: float = 0.01
    out_of_domain: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Protocol:
        """From the `sweep.*` settings the jobs' configs hold; a default where a setting is absent."""
        defaults = cls()
        test = settings.get("sweep.test") or defaults.test
        if test not in TESTS:
            raise ConfigError("sweep.test", f"{test!r} is not a test the report runs", f"use one of {', '.join(TESTS)}")
        margin = as_number(settings.get("sweep.margin", defaults.margin))
        if margin is None or margin < 0:
            raise ConfigError("sweep.margin", f"{settings.get('sweep.margin')!r} is not a margin", "use a number >= 0, e.g. 0.01")
        return cls(str(settings.get("sweep.control") or defaults.control), listed(settings.get("sweep.family")),
                   test, margin, listed(settings.get("sweep.out_of_domain")))

    @property
    def zero_shot_control(self) -> bool:
        return self.control == ZERO_SHOT_CONTROL

    def out_of_domain_datasets(self, datasets: Sequence[str]) -> list[str]:
        return list(datasets[1:]) if self.out_of_domain is None else [d for d in datasets if d in self.out_of_domain]


def listed(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(map(str, value)) if isinstance(value, (list, tuple)) else (str(value),)


@dataclass
class Study:
    """How the rows were compared: what the significance section states beside its tables."""

    protocol: Protocol
    control: Any = None  # a point index, ZERO_SHOT (each row's own), or None: no completed control row
    family: list = field(default_factory=list)  # point indices
    unmatched: list[str] = field(default_factory=list)  # sweep.family entries no completed row matches
    best: Any = None  # point index
    best_on_dev: bool = False  # the best row was chosen on the jobs' dev metric, not on test


# --- one comparison ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    diff: float
    ci_low: float
    ci_high: float
    p: float
    lower_bound: float  # one-sided 95% bounds, for the non-inferiority verdict
    upper_bound: float
    queries: int
    p_adjusted: float = math.nan
    in_family: bool = False

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA

    def columns(self, prefix: str) -> dict:
        return {f"{prefix}.{name}": getattr(self, name) for name in FIELDS}

    def verdict(self, margin: float) -> str:
        """Non-inferior when the lower bound clears -margin, worse when the upper bound is below 0."""
        if self.lower_bound > -margin:
            return NON_INFERIOR
        return WORSE if self.upper_bound < 0 else INCONCLUSIVE

    def verdict_columns(self, prefix: str, margin: float) -> dict:
        values = {"lower_bound": self.lower_bound, "upper_bound": self.upper_bound, "margin": margin,
                  "verdict": self.verdict(margin)}
        return {f"{prefix}.{name}": value for name, value in values.items()}


def weighted_differences(row: ByQuery, other: ByQuery) -> np.ndarray:
    """row - other on the queries both have, scaled so that their mean is the macro-averaged difference."""
    shared = {dataset: sorted(set(row[dataset]) & set(other[dataset])) for dataset in row if dataset in other}
    shared = {dataset: queries for dataset, queries in shared.items() if queries}
    total = sum(map(len, shared.values()))
    return np.array([(row[d][q] - other[d][q]) * total / (len(shared) * len(queries))
                     for d, queries in shared.items() for q in queries], dtype=float)


@lru_cache(maxsize=6)  # one per scope's query count: 10,000 x 300 flips are 24 MB
def sign_flips(queries: int) -> np.ndarray:
    """Every sign vector when there are at most RESAMPLES of them, else RESAMPLES drawn with FLIP_SEED."""
    if 2 ** queries <= RESAMPLES:
        return np.array(list(product((1.0, -1.0), repeat=queries)))
    return np.random.default_rng(FLIP_SEED).choice(np.array([1.0, -1.0]), size=(RESAMPLES, queries))


def randomization_p(differences: np.ndarray) -> float:
    """Two-sided: the share of sign flips whose mean is at least as far from 0 as the observed one."""
    flips = sign_flips(len(differences))
    observed = abs(differences.sum())
    extreme = int(np.count_nonzero(np.abs(flips @ differences) >= observed * (1 - 1e-9)))
    if 2 ** len(differences) <= RESAMPLES:  # exact: the identity is among the flips
        return extreme / len(flips)
    return (extreme + 1) / (len(flips) + 1)


P_VALUES: dict[str, Callable[[np.ndarray], float]] = {
    "randomization": randomization_p,
    "t": lambda differences: float(stats.ttest_1samp(differences, 0.0).pvalue),
}


def compare(row: ByQuery, other: ByQuery, test: str = "randomization") -> Comparison | None:
    """row - other, uncorrected; None with fewer than two shared queries."""
    differences = weighted_differences(row, other)
    if len(differences) < 2:
        return None
    diff = float(differences.mean())
    if np.allclose(differences, differences[0], rtol=0, atol=1e-12):  # no spread: the difference is exact
        return Comparison(diff, diff, diff, 1.0 if diff == 0 else 0.0, diff, diff, len(differences))
    t = stats.ttest_1samp(differences, 0.0)
    interval = t.confidence_interval(1 - ALPHA)
    one_sided = t.confidence_interval(1 - 2 * ALPHA)  # each end of a 90% two-sided interval is a 95% one-sided bound
    return Comparison(diff, float(interval.low), float(interval.high), P_VALUES[test](differences),
                      float(one_sided.low), float(one_sided.high), len(differences))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest p times (m - k + 1), made monotone, capped at 1."""
    order = np.argsort(p_values, kind="stable")
    scaled = np.array(p_values, dtype=float)[order] * (len(p_values) - np.arange(len(p_values)))
    adjusted = np.empty(len(p_values))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted.tolist()


def family_comparisons(rows: Mapping[Any, ByQuery], controls: Mapping[Any, ByQuery], family: Sequence,
                       test: str) -> dict[Any, Comparison]:
    """Each row against its control; Holm over the family's rows, the others keep their own p-value."""
    results = {key: result for key, control in controls.items()
               if key in rows and control and (result := compare(rows[key], control, test)) is not None}
    members = [key for key in results if key in family]
    adjusted = dict(zip(members, holm([results[key].p for key in members])))
    return {key: replace(result, p_adjusted=adjusted.get(key, result.p), in_family=key in adjusted)
            for key, result in results.items()}


# --- the rows ---------------------------------------------------------------------------------------------

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


def completed_points(points: pd.DataFrame) -> pd.DataFrame:
    return points[points["status"] == COMPLETED]


def point_rows(points: pd.DataFrame, per_query_by_job: Mapping[str, Mapping], metric: str, row: str) -> dict:
    """One per_query.json row ("trained", "zero_shot") of every completed point, seed-averaged."""
    found = {}
    for index, point in completed_points(points).iterrows():
        runs = [row_values(per_query_by_job.get(job, {}), row, metric) for job in point[JOBS]]
        if runs and all(runs):
            found[index] = seed_mean(runs)
    return found


def reference_values(per_query_by_job: Mapping[str, Mapping], metric: str, zero_shot_shared: bool) -> dict:
    """The reference rows' per-query values (the jobs share them); no zero-shot row when the points' differ."""
    found = {}
    for system, label in SYSTEMS.items():
        values = next((v for per_query in per_query_by_job.values() if (v := row_values(per_query, system, metric))), {})
        if values and (label != ZERO_SHOT or zero_shot_shared):
            found[label] = values
    return found


def point_groups(points: pd.DataFrame, groups_by_job: Mapping[str, Groups]) -> dict[Any, Groups]:
    """Each point's seen / unseen queries: its first job's (the split does not depend on the seed)."""
    found = {}
    for index, point in completed_points(points).iterrows():
        if groups := next((groups_by_job[job] for job in point[JOBS] if groups_by_job.get(job)), None):
            found[index] = groups
    return found


# --- naming rows: sweep.control and sweep.family entries -----------------------------------------------------

def matches(point: pd.Series, entry: str, label: str, keys: Sequence[str]) -> bool:
    """An entry names a row by its label ("r=4, negatives=2") or by overrides ("lora.r=4,data.negatives=2",
    short names allowed); a row matches overrides it agrees with on every key named."""
    if entry.strip() == label:
        return True
    names = {**{key: key for key in keys}, **{short: key for key, short in short_names(list(keys)).items()}}
    pairs = [part.partition("=") for part in entry.split(",")]
    if not pairs or any(not sep or key.strip() not in names for key, sep, _ in pairs):
        return False
    return all(same_value(point.get(names[key.strip()]), value.strip()) for key, _, value in pairs)


def same_value(held: Any, given: str) -> bool:
    shown = display_value(held)
    number, wanted = as_number(shown), as_number(given)
    return shown == given or (number is not None and number == wanted)


def named_points(points: pd.DataFrame, entry: str, labels: Mapping, keys: Sequence[str]) -> list:
    return [index for index, point in completed_points(points).iterrows() if matches(point, entry, str(labels[index]), keys)]


def study_rows(points: pd.DataFrame, protocol: Protocol, labels: Mapping, keys: Sequence[str]) -> Study:
    """The control and the family the protocol names, among the completed points."""
    study = Study(protocol)
    if protocol.zero_shot_control:
        study.control = ZERO_SHOT
    else:
        named = named_points(points, protocol.control, labels, keys)
        if len(named) > 1:
            rows = ", ".join(str(labels[index]) for index in named)
            raise ConfigError("sweep.control", f"{protocol.control!r} names {len(named)} rows ({rows})",
                              "name one row: give a value for every swept key")
        study.control = named[0] if named else None
    if protocol.family is None:
        study.family = [index for index in completed_points(points).index if index != study.control]
        return study
    for entry in protocol.family:
        named = named_points(points, entry, labels, keys)
        if not named:
            study.unmatched.append(entry)
        study.family += [index for index in named if index not in study.family and index != study.control]
    return study


def best_point(points: pd.DataFrame, candidates: Sequence, metric: str) -> tuple[Any, bool]:
    """The candidate with the highest dev value of the study metric when the jobs report one (True), else
    the highest test average (False: the report labels it a selection figure)."""
    for column, on_dev in ((f"dev.{metric}", True), (f"{AVERAGE}/{metric}", False)):
        scored = [(float(points.at[key, column]), key) for key in candidates
                  if column in points and as_number(points.at[key, column]) is not None]
        if scored:
            return max(scored, key=lambda pair: pair[0])[1], on_dev
    return None, False


# --- scopes: the macro average, each dataset alone, each dataset's seen and unseen queries ---------------------

def vs_control_prefix(dataset: str | None = None, group: str | None = None) -> str:
    return VS_CONTROL + (f"@{dataset}" if dataset else "") + (f"/{group}" if group else "")


def dataset_prefix(dataset: str) -> str:
    return vs_control_prefix(dataset)


def on_dataset(values: ByQuery | None, dataset: str, queries: set[str] | None = None) -> ByQuery:
    if not values or dataset not in values:
        return {}
    return {dataset: {q: v for q, v in values[dataset].items() if queries is None or q in queries}}


def scopes(datasets: Sequence[str], groups: Mapping[Any, Groups], out_of_domain: Sequence[str]):
    """(prefix, restriction of a row's values) for every scope; a restriction may depend on the row (its groups)."""
    found = [(VS_CONTROL, lambda key, values: values)]
    if len(datasets) > 1 or out_of_domain:
        found += [(vs_control_prefix(d), lambda key, values, d=d: on_dataset(values, d)) for d in datasets]
    grouped = [d for d in datasets if any(d in by_dataset for by_dataset in groups.values())]
    for dataset, group in product(grouped, QUERY_GROUPS):
        def restrict(key, values, dataset=dataset, group=group):
            ids = groups.get(key, {}).get(dataset, {}).get(group)
            return on_dataset(values, dataset, ids) if ids else {}

        found.append((vs_control_prefix(dataset, group), restrict))
    return found


def control_anchors(study: Study, rows: Mapping, own_zero_shot: Mapping) -> dict:
    """What each row is compared with: its own zero-shot, or the control row."""
    if study.control == ZERO_SHOT:
        shared = rows.get(ZERO_SHOT)
        return {key: own_zero_shot.get(key, shared) for key in rows if key != ZERO_SHOT}
    if study.control is None:
        return {}
    return {key: rows[study.control] for key in rows if key != study.control}


def comparison_columns(rows: dict, own_zero_shot: dict, groups: dict, study: Study, datasets: Sequence[str],
                       points: pd.DataFrame, metric: str) -> dict:
    """Every row against the control in every scope, with the out-of-domain verdicts, then against the
    family's best row (the study's `best`, chosen here)."""
    protocol = study.protocol
    out_of_domain = protocol.out_of_domain_datasets(datasets)
    anchors = control_anchors(study, rows, own_zero_shot)
    columns: dict = {}
    for prefix, restrict in scopes(datasets, groups, out_of_domain):
        scoped = {key: restrict(key, values) for key, values in rows.items()}
        controls = {key: restrict(key, anchor) for key, anchor in anchors.items()}
        for key, result in family_comparisons(scoped, controls, study.family, protocol.test).items():
            columns.setdefault(key, {}).update(result.columns(prefix))
            if prefix in {vs_control_prefix(d) for d in out_of_domain}:
                columns[key].update(result.verdict_columns(prefix, protocol.margin))
    study.best, study.best_on_dev = best_point(points, [key for key in study.family if key in rows], metric)
    if study.best is not None:
        others = {key: rows[study.best] for key in rows if key != study.best}
        for key, result in family_comparisons(rows, others, study.family, protocol.test).items():
            columns.setdefault(key, {}).update(result.columns(VS_BEST))
    return columns


def add_comparisons(frame: pd.DataFrame, points: pd.DataFrame, references: pd.DataFrame,
                    per_query_by_job: Mapping[str, Mapping], groups_by_job: Mapping[str, Groups], metric: str,
                    zero_shot_shared: bool, protocol: Protocol, labels: Mapping, keys: Sequence[str],
                    datasets: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Study]:
    """The comparison columns (`vs_control.diff`, `vs_control@<dataset>.verdict`, `vs_best.p_adjusted`, ...)
    on the points, the reference rows and each job's row (its point's comparison); none when no job kept
    per-query values."""
    study = study_rows(points, protocol, labels, keys)
    rows = {**reference_values(per_query_by_job, metric, zero_shot_shared), **point_rows(points, per_query_by_job, metric, "trained")}
    own_zero_shot = point_rows(points, per_query_by_job, metric, "zero_shot")
    columns = comparison_columns(rows, own_zero_shot, point_groups(points, groups_by_job), study, datasets, points, metric)
    if not columns:
        return frame, points, references, study
    by_point = {k: v for k, v in columns.items() if not isinstance(k, str)}
    points = points.join(pd.DataFrame.from_dict(by_point, orient="index")) if by_point else points
    compared = [column for column in points.columns if column.startswith((VS_CONTROL, f"{VS_BEST}."))]
    point_of_job = {job: point for point, jobs in points[JOBS].items() for job in jobs}
    frame = pd.concat([frame, points.reindex(frame["job"].map(point_of_job))[compared].set_axis(frame.index)], axis=1)
    labelled = pd.DataFrame.from_dict({k: v for k, v in columns.items() if isinstance(k, str)}, orient="index")
    return frame, points, references.join(labelled) if not references.empty else references, study
