"""Effect or noise, under the study's declared protocol: every row's paired difference to the study's control.

The protocol is declared by the study (the `sweep` config section, read from the jobs' configs):
- `sweep.control`: the row every other is compared with: "zero_shot" (each row's own zero-shot) or an
  override naming one grid row ("loss.weights.kl=0");
- `sweep.family`: the rows whose comparisons are corrected together (labels, or `key=value` overrides that may
  name any config key). Null: the sweep's own grid -- the points multirun.yaml declares (its sweeps expanded
  with its fixed overrides, seeds aside), whatever has completed -- or, with no such grid, every row of the
  folder. A family member that failed, has not run or has no per-query values counts with p = 1, so the
  family's size never shrinks; reference rows (BM25, zero-shot, fusion) and rows outside the family are shown
  with their uncorrected p-value and never counted;
- `sweep.test`: "randomization" (the sign-flip test, the IR default) or "t" (the paired t-test), with intervals
  and bounds from the same test (splade_peft/sweep/paired.py);
- `sweep.margin`: the non-inferiority margin on the study metric;
- `sweep.out_of_domain`: the datasets whose verdict is non-inferiority (null: every dataset the jobs did not
  train on, by their configs' data.name and data.mixture).

p-values are Holm-corrected within each family: one per scope (the macro average, each dataset alone, each
dataset's seen, exposed and unseen queries) and comparison (against the control, against the best row). Intervals are
uncorrected: the 95% interval holds 0 exactly when the uncorrected p is >= 0.05; "n.s." is decided by the
corrected p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import product
from typing import Any

import pandas as pd

from splade_peft.errors import ConfigError
from splade_peft.labels import REFERENCE_LABELS, ZERO_SHOT
from splade_peft.results import AVERAGE, COMPLETED, as_number
from splade_peft.sweep.load import QUERY_GROUPS, Grid, Groups, Sweep
from splade_peft.sweep.paired import ALPHA, COMPARISONS, ByQuery, Comparison, Runs, compare, holm
from splade_peft.sweep.points import JOBS
from splade_peft.sweep.values import display_value, short_names

__all__ = ["ALPHA", "Comparison", "compare", "holm"]

ZERO_SHOT_CONTROL = "zero_shot"
VS_CONTROL, VS_BEST = "vs_control", "vs_best"
NON_INFERIOR, INFERIOR, INCONCLUSIVE = "non-inferior", "inferior", "inconclusive"
FIELDS = ("diff", "ci_low", "ci_high", "p", "p_adjusted", "significant", "in_family", "queries", "query_half_width",
          "seed_half_width", "exact")
# One record per row x dataset x group x comparison: the long table every reader (tables, plots, CSV) reads.
# dataset AVERAGE is the macro average over the datasets, group ALL_QUERIES a dataset's every query; the
# non-inferiority fields are filled on the out-of-domain datasets' ALL_QUERIES records against the control only.
ALL_QUERIES = "all"
KEY_COLUMNS = ("row", "dataset", "group", "comparison")
COLUMNS = ("row", "label", "jobs", "dataset", "group", "comparison", *FIELDS, "lower_bound", "upper_bound", "margin",
           "verdict")
DECLARED, GRID, FOLDER = "sweep.family", "grid", "folder"  # where a family comes from

Setting = Callable[[Any, str], Any]  # (point index, config key) -> the point's value: its override, else its config's


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
        if test not in COMPARISONS:
            raise ConfigError("sweep.test", f"{test!r} is not a test the report runs", f"use one of {', '.join(COMPARISONS)}")
        margin = as_number(settings.get("sweep.margin", defaults.margin))
        if margin is None or margin < 0:
            raise ConfigError("sweep.margin", f"{settings.get('sweep.margin')!r} is not a margin", "use a number >= 0, e.g. 0.01")
        return cls(str(settings.get("sweep.control") or defaults.control), listed(settings.get("sweep.family")),
                   test, margin, listed(settings.get("sweep.out_of_domain")))

    @property
    def zero_shot_control(self) -> bool:
        return self.control == ZERO_SHOT_CONTROL

    def out_of_domain_datasets(self, datasets: Sequence[str], trained_on: Sequence[str]) -> list[str]:
        """sweep.out_of_domain, or every evaluation dataset the jobs did not train on."""
        if self.out_of_domain is not None:
            return [d for d in datasets if d in self.out_of_domain]
        return [d for d in datasets if d not in trained_on]


def listed(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(map(str, value)) if isinstance(value, (list, tuple)) else (str(value),)


@dataclass
class Study:
    """How the rows were compared: what the significance section states beside its tables."""

    protocol: Protocol
    control: Any = None  # a point index, ZERO_SHOT (each row's own), or None: no completed control row
    family: list = field(default_factory=list)  # point indices of the completed family rows
    missing: list[str] = field(default_factory=list)  # family members without a tested row: each counted with p = 1
    family_source: str = FOLDER  # DECLARED, GRID or FOLDER
    best: Any = None  # point index
    best_on_dev: bool = False  # the best row was chosen on the jobs' dev metric, not on test
    out_of_domain: list[str] = field(default_factory=list)  # the datasets judged for non-inferiority
    comparisons: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))  # COLUMNS, long format

    @property
    def family_size(self) -> int:
        return len(self.family) + len(self.missing)

    @cached_property
    def by_key(self) -> dict[tuple, dict]:
        return {tuple(record[key] for key in KEY_COLUMNS): record for record in self.comparisons.to_dict("records")}

    def comparison(self, row: Any, dataset: str = AVERAGE, group: str = ALL_QUERIES, kind: str = VS_CONTROL) -> dict | None:
        """One row's comparison in one scope (the macro average by default) against the control (or VS_BEST)."""
        return self.by_key.get((row, dataset, group, kind))

    def tested_points(self) -> pd.DataFrame:
        """The records of grid rows (reference rows are keyed by their label, grid rows by their point)."""
        return self.comparisons[self.comparisons["row"].map(lambda row: not isinstance(row, str)).astype(bool)]

    def point_scopes(self, kind: str = VS_CONTROL) -> set[tuple[str, str]]:
        """(dataset, group) scopes in which some grid row was compared."""
        tested = self.tested_points()
        tested = tested[tested["comparison"] == kind]
        return set(zip(tested["dataset"], tested["group"]))

    def judged_datasets(self) -> set[str]:
        """Datasets on which some grid row got a non-inferiority verdict."""
        tested = self.tested_points()
        return set(tested[tested["verdict"].notna()]["dataset"])


# --- one comparison's verdict ------------------------------------------------------------------------------

def verdict(comparison: Comparison, margin: float) -> str:
    """Non-inferior when the one-sided 95% lower bound is above -margin, inferior when the one-sided 95% upper
    bound is below -margin, inconclusive otherwise."""
    if comparison.lower_bound > -margin:
        return NON_INFERIOR
    return INFERIOR if comparison.upper_bound < -margin else INCONCLUSIVE


def comparison_record(row: Any, scope: tuple[str, str], kind: str, comparison: Comparison,
                      margin: float | None = None) -> dict:
    """One record of the long table; the non-inferiority fields only where a margin judges the scope."""
    record = {"row": row, "dataset": scope[0], "group": scope[1], "comparison": kind,
              **{name: getattr(comparison, name) for name in FIELDS}}
    if margin is not None:
        record.update(lower_bound=comparison.lower_bound, upper_bound=comparison.upper_bound, margin=margin,
                      verdict=verdict(comparison, margin))
    return record


def family_comparisons(rows: Mapping[Any, Runs], controls: Mapping[Any, Runs], family: Sequence, missing: int,
                       test: str) -> dict[Any, Comparison]:
    """Each row against its control; Holm over the family, whose members without a comparison here (and the
    `missing` ones) count with p = 1; the other rows keep their own p-value."""
    results = {key: result for key, control in controls.items()
               if rows.get(key) and control and (result := compare(rows[key], control, test)) is not None}
    members = list(family)
    adjusted = holm([results[key].p if key in results else 1.0 for key in members] + [1.0] * missing)
    by_member = dict(zip(members, adjusted))
    return {key: replace(result, p_adjusted=by_member.get(key, result.p), in_family=key in by_member)
            for key, result in results.items()}


# --- the rows ---------------------------------------------------------------------------------------------

def row_values(per_query: Mapping, row: str, metric: str) -> ByQuery:
    return {dataset: by_metric[metric] for dataset, by_metric in per_query.get(row, {}).items() if by_metric.get(metric)}


def completed_points(points: pd.DataFrame) -> pd.DataFrame:
    return points[points["status"] == COMPLETED]


def point_rows(points: pd.DataFrame, per_query_by_job: Mapping[str, Mapping], metric: str, row: str) -> dict:
    """One per_query.json row ("trained", "zero_shot") of every completed point, one entry per seed."""
    found = {}
    for index, point in completed_points(points).iterrows():
        runs = [row_values(per_query_by_job.get(job, {}), row, metric) for job in point[JOBS]]
        if runs and all(runs):
            found[index] = runs
    return found


def reference_values(per_query_by_job: Mapping[str, Mapping], metric: str, zero_shot_shared: bool) -> dict:
    """The reference rows' per-query values (the jobs share them); no zero-shot row when the points' differ."""
    found = {}
    for system, label in REFERENCE_LABELS.items():
        values = next((v for per_query in per_query_by_job.values() if (v := row_values(per_query, system, metric))), {})
        if values and (label != ZERO_SHOT or zero_shot_shared):
            found[label] = [values]
    return found


def point_groups(points: pd.DataFrame, groups_by_job: Mapping[str, Groups]) -> dict[Any, Groups]:
    """Each point's seen / exposed / unseen queries: its first job's (the split does not depend on the seed)."""
    found = {}
    for index, point in completed_points(points).iterrows():
        if groups := next((groups_by_job[job] for job in point[JOBS] if groups_by_job.get(job)), None):
            found[index] = groups
    return found


# --- naming rows: sweep.control and sweep.family entries -----------------------------------------------------

def same_value(held: Any, given: str) -> bool:
    shown = display_value(held)
    number, wanted = as_number(shown), as_number(given)
    return shown == given or (number is not None and number == wanted)


def matches(index: Any, point: pd.Series, entry: str, label: str, keys: Sequence[str], setting: Setting) -> bool:
    """An entry names a row by its label ("r=4, negatives=2") or by overrides ("lora.r=4,data.negatives=2",
    short names of swept keys allowed, any other config key by its full name); a row matches overrides it
    agrees with on every key named."""
    if entry.strip() == label:
        return True
    names = {short: key for key, short in short_names(list(keys)).items()}
    pairs = [part.partition("=") for part in entry.split(",")]
    if not pairs or any(not sep or not key.strip() for key, sep, _ in pairs):
        return False

    def held(key: str) -> Any:
        key = names.get(key, key)
        return point.get(key) if key in keys else setting(index, key)

    return all(same_value(held(key.strip()), value.strip()) for key, _, value in pairs)


def named_points(points: pd.DataFrame, entry: str, labels: Mapping, keys: Sequence[str], setting: Setting) -> list:
    return [index for index, point in points.iterrows() if matches(index, point, entry, str(labels[index]), keys, setting)]


def grid_values(point: pd.Series, keys: Sequence[str]) -> tuple:
    return tuple(display_value(point.get(key)) for key in keys)


def distinct_points(points: pd.DataFrame, indices: Sequence, keys: Sequence[str]) -> list:
    """The indices, an unfinished job dropped where a completed row stands for the same grid point."""
    completed = {grid_values(points.loc[index], keys) for index in indices if points.at[index, "status"] == COMPLETED}
    return [index for index in indices
            if points.at[index, "status"] == COMPLETED or grid_values(points.loc[index], keys) not in completed]


def unfinished_label(points: pd.DataFrame, index: Any, labels: Mapping) -> str:
    return f"{labels[index]} ({points.at[index, 'status']})"


def control_row(points: pd.DataFrame, protocol: Protocol, labels: Mapping, keys: Sequence[str], setting: Setting) -> Any:
    if protocol.zero_shot_control:
        return ZERO_SHOT
    named = named_points(completed_points(points), protocol.control, labels, keys, setting)
    if len(named) > 1:
        rows = ", ".join(str(labels[index]) for index in named)
        raise ConfigError("sweep.control", f"{protocol.control!r} names {len(named)} rows ({rows})",
                          "name one row: give a value for every swept key")
    return named[0] if named else None


def add_member(study: Study, points: pd.DataFrame, index: Any, labels: Mapping) -> None:
    if index == study.control or index in study.family:
        return
    if points.at[index, "status"] == COMPLETED:
        study.family.append(index)
    elif (label := unfinished_label(points, index, labels)) not in study.missing:
        study.missing.append(label)


def declared_family(study: Study, points: pd.DataFrame, labels: Mapping, keys: Sequence[str], setting: Setting) -> None:
    for entry in study.protocol.family:
        named = distinct_points(points, named_points(points, entry, labels, keys, setting), keys)
        if not named:
            study.missing.append(f"`{entry}` (no row)")
        for index in named:
            add_member(study, points, index, labels)


def grid_family(study: Study, grid: Grid, points: pd.DataFrame, labels: Mapping, setting: Setting) -> None:
    """One member per grid point: the folder's row whose overrides agree with it, a completed one first."""
    ordered = list(completed_points(points).index) + [i for i in points.index if points.at[i, "status"] != COMPLETED]
    for grid_point in grid.points:
        row = next((index for index in ordered
                    if all(same_value(setting(index, key), value) for key, value in grid_point.items())), None)
        if row is None:
            study.missing.append(f"{grid.label(grid_point)} (not run)")
        else:
            add_member(study, points, row, labels)


def study_rows(points: pd.DataFrame, protocol: Protocol, labels: Mapping, keys: Sequence[str], grid: Grid | None,
               setting: Setting) -> Study:
    """The control and the family the protocol (or the sweep's grid) names, among every row of the folder."""
    study = Study(protocol, control=control_row(points, protocol, labels, keys, setting))
    if protocol.family is not None:
        study.family_source = DECLARED
        declared_family(study, points, labels, keys, setting)
    elif grid is not None:
        study.family_source = GRID
        grid_family(study, grid, points, labels, setting)
    else:
        for index in distinct_points(points, list(points.index), keys):
            add_member(study, points, index, labels)
    return study


def untested_members(study: Study, rows: Mapping, labels: Mapping) -> None:
    """Completed family rows without per-query values are members without a test: listed with p = 1."""
    for index in [index for index in study.family if index not in rows]:
        study.family.remove(index)
        study.missing.append(f"{labels[index]} (no per-query values)")


def best_point(points: pd.DataFrame, candidates: Sequence, metric: str) -> tuple[Any, bool]:
    """The candidate with the highest dev value of the study metric when the jobs report one (True), else
    the highest test average (False: the report labels it a selection figure)."""
    for column, on_dev in ((f"dev.{metric}", True), (f"{AVERAGE}/{metric}", False)):
        scored = [(float(points.at[key, column]), key) for key in candidates
                  if column in points and as_number(points.at[key, column]) is not None]
        if scored:
            return max(scored, key=lambda pair: pair[0])[1], on_dev
    return None, False


# --- scopes: the macro average, each dataset alone, each dataset's seen, exposed, unseen queries -------------

def on_dataset(runs: Runs | None, dataset: str, queries: set[str] | None = None) -> list[ByQuery]:
    if not runs or any(dataset not in run for run in runs):
        return []
    return [{dataset: {q: v for q, v in run[dataset].items() if queries is None or q in queries}} for run in runs]


def scopes(datasets: Sequence[str], groups: Mapping[Any, Groups], out_of_domain: Sequence[str]):
    """((dataset, group), restriction of a row's values) for every scope; a restriction may depend on the row (its
    groups)."""
    found = [((AVERAGE, ALL_QUERIES), lambda key, runs: runs)]
    if len(datasets) > 1 or out_of_domain:
        found += [((d, ALL_QUERIES), lambda key, runs, d=d: on_dataset(runs, d)) for d in datasets]
    grouped = [d for d in datasets if any(d in by_dataset for by_dataset in groups.values())]
    for dataset, group in product(grouped, QUERY_GROUPS):
        def restrict(key, runs, dataset=dataset, group=group):
            ids = groups.get(key, {}).get(dataset, {}).get(group)
            return on_dataset(runs, dataset, ids) if ids else []

        found.append(((dataset, group), restrict))
    return found


def control_anchors(study: Study, rows: Mapping, own_zero_shot: Mapping) -> dict:
    """What each row is compared with: its own zero-shot, or the control row."""
    if study.control == ZERO_SHOT:
        shared = rows.get(ZERO_SHOT)
        return {key: own_zero_shot.get(key, shared) for key in rows if key != ZERO_SHOT}
    if study.control is None:
        return {}
    return {key: rows[study.control] for key in rows if key != study.control}


def all_comparisons(rows: dict, own_zero_shot: dict, groups: dict, study: Study, datasets: Sequence[str],
                    points: pd.DataFrame, metric: str) -> list[dict]:
    """Every row against the control in every scope, with the out-of-domain verdicts, then against the
    family's best row (the study's `best`, chosen here): the long table's records."""
    protocol, missing = study.protocol, len(study.missing)
    anchors = control_anchors(study, rows, own_zero_shot)
    judged = {(d, ALL_QUERIES) for d in study.out_of_domain}
    records = []
    for scope, restrict in scopes(datasets, groups, study.out_of_domain):
        scoped = {key: restrict(key, runs) for key, runs in rows.items()}
        controls = {key: restrict(key, anchor) for key, anchor in anchors.items()}
        margin = protocol.margin if scope in judged else None
        records += [comparison_record(key, scope, VS_CONTROL, result, margin) for key, result
                    in family_comparisons(scoped, controls, study.family, missing, protocol.test).items()]
    study.best, study.best_on_dev = best_point(points, [key for key in study.family if key in rows], metric)
    if study.best is not None:
        others = {key: rows[study.best] for key in rows if key != study.best}
        members = [key for key in study.family if key != study.best]
        records += [comparison_record(key, (AVERAGE, ALL_QUERIES), VS_BEST, result) for key, result
                    in family_comparisons(rows, others, members, missing, protocol.test).items()]
    return records


def comparison_frame(records: list[dict], points: pd.DataFrame, labels: Mapping) -> pd.DataFrame:
    """The records with each row's label and job folders beside its key (grid rows are keyed by their point)."""
    def jobs(row: Any) -> str:
        return "" if isinstance(row, str) else ", ".join(points.at[row, JOBS])

    named = [{**record, "label": record["row"] if isinstance(record["row"], str) else labels[record["row"]],
              "jobs": jobs(record["row"])} for record in records]
    return pd.DataFrame.from_records(named, columns=COLUMNS)


def run_study(sweep: Sweep) -> Study:
    """The study of a loaded sweep under its declared protocol: its control, family and best row, and the long
    table of comparisons (empty when no job kept per-query values)."""
    protocol, points, metric = Protocol.from_settings(sweep.settings), sweep.points, sweep.metric
    labels = dict(zip(points.index, sweep.grid_labels(points)))
    study = study_rows(points, protocol, labels, sweep.grid_keys, sweep.grid, sweep.setting)
    study.out_of_domain = protocol.out_of_domain_datasets(sweep.datasets, sweep.trained_on)
    per_query = sweep.per_query
    rows = {**reference_values(per_query, metric, sweep.zero_shot_shared), **point_rows(points, per_query, metric, "trained")}
    untested_members(study, rows, labels)
    own_zero_shot = point_rows(points, per_query, metric, "zero_shot")
    records = all_comparisons(rows, own_zero_shot, point_groups(points, sweep.query_groups), study, sweep.datasets, points, metric)
    study.comparisons = comparison_frame(records, points, labels)
    return study
