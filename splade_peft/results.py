"""One job's result: results.json as one typed record, written by the job and read back by the tracker, the run's
summary table and the sweep report alike; and per_query.json, the per-query values behind its means.

results.json holds JobResult's fields in declaration order, a field that is None left out: a job writes it
when it starts (status "running", the reproducibility fields), then once more when it ends ("completed" with
the measured sections, or "failed" with the error).

Flat column names (the sweep_results.csv columns): `<dataset>/<key>` for metrics and sparsity, with the
macro average over datasets as dataset `average` and over a suite's datasets as `suite:<suite>`; `params.<key>`, `timing.<key>`, `memory.<key>`.

per_query.json, in the job folder: {row: {dataset: {metric: {query_id: value}}}}, row one of ROWS, metric a
results.json metric name (ndcg@10, mrr@10, ...), one value per judged query as `evaluation.metrics.per_query`
gives them (0 for a query the run has no documents for).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from splade_peft.records import redact, write_json_atomic

RESULTS_FILE = "results.json"
PER_QUERY_FILE = "per_query.json"
QUERY_GROUPS_FILE = "query_groups.json"  # {dataset: {"seen": [...], "exposed": [...], "unseen": [...]}}: data/exposure.py
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
UNKNOWN = "unknown"  # read from a results.json that names no status
AVERAGE = "average"
SUITE_PREFIX = "suite:"  # `suite:<suite>/<metric>` columns: a suite's macro average, beside the datasets' columns
REFERENCE_SYSTEMS = ("bm25", "zero_shot", "fusion")
ROWS = ("trained", *REFERENCE_SYSTEMS)
COST_SECTIONS = ("params", "timing", "memory")  # flattened as `<section>.<key>`

PerQuery = dict[str, dict[str, float]]  # metric -> query id -> value


def macro_average(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean over datasets of every key all of them have: each dataset counts once, whatever its size."""
    if not per_dataset:
        return {}
    names = set.intersection(*(set(metrics) for metrics in per_dataset.values()))
    return {name: sum(m[name] for m in per_dataset.values()) / len(per_dataset) for name in sorted(names)}


# --- forgiving accessors: a results.json may be partial, hand-edited or from an older version -------------

def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_number(value: Any) -> float | None:
    """A finite-or-infinite number from a JSON value or an override string; None for text, booleans and NaN."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def numbers(values: Any) -> dict[str, float | int]:
    """The numeric entries, integers kept as integers (counts, parameters) so a CSV shows them as such."""
    return {
        str(key): value if isinstance(value, int) else number
        for key, value in mapping(values).items() if (number := as_number(value)) is not None
    }


def per_dataset_columns(per_dataset: Mapping[str, dict]) -> dict[str, float]:
    """`<dataset>/<key>` columns, with the macro average added where the values carry none (sparsity,
    reference rows); the pipeline already stores the trained metrics' average."""
    tables = {str(name): numbers(values) for name, values in per_dataset.items() if isinstance(values, dict)}
    if tables and AVERAGE not in tables and (average := macro_average(tables)):
        tables[AVERAGE] = average
    return {f"{name}/{key}": value for name, values in tables.items() for key, value in values.items()}


# --- results.json --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """One system (the trained model, BM25, the zero-shot checkpoint) on the evaluation datasets."""

    metrics: dict[str, dict] = field(default_factory=dict)  # dataset -> metric -> value
    sparsity: dict[str, dict] = field(default_factory=dict)  # dataset -> statistic -> value

    def flat(self) -> dict[str, float]:
        return {**per_dataset_columns(self.metrics), **per_dataset_columns(self.sparsity)}

    def on(self, dataset: str) -> tuple[dict, dict]:
        """(metrics, sparsity) on one dataset; empty where not evaluated."""
        return numbers(self.metrics.get(dataset)), numbers(self.sparsity.get(dataset))


@dataclass(frozen=True)
class JobResult:
    """results.json. Read back, a field holds what the file holds, or None where the file lacks it or holds
    a value of the wrong kind: a sweep is reported from partial, hand-edited and older files too."""

    status: str = RUNNING  # RUNNING, COMPLETED or FAILED as written; UNKNOWN read from a file without one
    seed: int | None = None
    config: dict | None = None  # the resolved job config, credentials redacted
    versions: dict | None = None  # library versions and the commit
    overrides: list[str] | None = None  # the command line's overrides
    config_fingerprint: str | None = None  # what tells a rerun in the same folder that this is its result
    warnings: list[str] | None = None  # what eval.allow_test_selection=true allowed: choosing or training on a test split
    data: dict | None = None  # {"train": ..., "eval": {dataset: fingerprint, split, sizes}}
    backbone_check: dict | None = None  # a decoder's answers to model/sanity.py's questions before training
    negatives_mining: dict | None = None  # a mined negatives file's mining stats: retriever, filter, removed per query
    references: dict | None = None  # {system: {dataset: {"metrics": ..., "sparsity": ...}}}, REFERENCE_SYSTEMS
    params: dict | None = None  # parameter counts and the adapter's size
    memory: dict | None = None  # peak memory, MB
    metrics: dict | None = None  # the trained encoder's {dataset: {metric: value}}, with AVERAGE
    suites: dict | None = None  # {suite: {"datasets": [...], "metrics": macro average, "verdict": ...}}: evaluation/suites.py
    dev: dict | None = None  # the trained encoder's {metric: value} on the split it was chosen on (eval.validation_split)
    dev_at_start: dict | None = None  # the same before training: the zero-shot figure for adapters that start as identity
    sparsity: dict | None = None  # {dataset: {statistic: value}}
    representation: dict | None = None  # dense encoders: {dataset: family, dimension, index size}
    timing: dict | None = None  # seconds per stage
    training: dict | None = None  # what fit() reports: steps, pairs, seconds, ...
    error: str | None = None  # a failed job's one-line cause and fix

    @classmethod
    def read(cls, path: str | Path) -> JobResult:
        """From a job folder's results.json (or the .json path given); ValueError (JSON errors included) when
        the file is not one JSON object, OSError when it cannot be read."""
        return cls.from_payload(json.loads(job_file(path, RESULTS_FILE).read_text()))

    @classmethod
    def from_payload(cls, payload: Any) -> JobResult:
        if not isinstance(payload, Mapping):
            raise ValueError(f"expected a JSON object, found {type(payload).__name__}")
        overrides, seed = payload.get("overrides"), payload.get("seed")
        fingerprint, error, warnings = payload.get("config_fingerprint"), payload.get("error"), payload.get("warnings")
        return cls(
            status=str(payload.get("status") or UNKNOWN),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            overrides=[str(entry) for entry in overrides] if isinstance(overrides, list) else None,
            config_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            warnings=[str(line) for line in warnings] if isinstance(warnings, list) else None,
            error=str(error) if error else None,
            **{name: value for name in OBJECT_FIELDS if isinstance(value := payload.get(name), dict)},
        )

    def to_payload(self) -> dict:
        """results.json's content: the fields that are set, in declaration order."""
        return {item.name: value for item in fields(self) if (value := getattr(self, item.name)) is not None}

    def redacted(self) -> JobResult:
        """The record with credentials hidden, as it is written and shown."""
        return type(self)(**redact(self.to_payload()))

    def write(self, folder: str | Path) -> Path:
        """Write results.json, redacted, atomically into the job folder (or to the .json path given)."""
        target = job_file(folder, RESULTS_FILE)
        write_json_atomic(target, self.redacted().to_payload())
        return target

    @property
    def datasets(self) -> list[str]:
        """Evaluation datasets in the order the job evaluated them, without AVERAGE."""
        evaluated = list(mapping(mapping(self.data).get("eval"))) or list(mapping(self.metrics))
        return [str(name) for name in evaluated if name != AVERAGE]

    @property
    def trained(self) -> Evaluation:
        return Evaluation(mapping(self.metrics), mapping(self.sparsity))

    @property
    def reference_rows(self) -> dict[str, Evaluation]:
        """The REFERENCE_SYSTEMS the record has: BM25 and the zero-shot checkpoint on the same datasets."""
        references = mapping(self.references)
        return {system: reference(references[system]) for system in REFERENCE_SYSTEMS if mapping(references.get(system))}

    def average(self, metric: str) -> float:
        """The macro average of `metric` over the evaluation datasets (the sweep's objective); NaN when absent."""
        return float(numbers(mapping(self.metrics).get(AVERAGE)).get(metric, math.nan))

    def dev_figure(self, metric: str) -> float:
        """`metric` of the trained model on the split it was chosen on (what hparams_search maximises); NaN
        when the job measured none (it trained nothing, or carved no dev split)."""
        return float(numbers(self.dev).get(metric, math.nan))

    @property
    def suite_members(self) -> dict[str, list[str]]:
        return {str(suite): [str(name) for name in entry.get("datasets", ()) if isinstance(name, str)]
                for suite, entry in mapping(self.suites).items() if isinstance(entry, dict)}

    def suite_average(self, evaluation: Evaluation, suite: str) -> dict[str, float]:
        """One row's (trained or a reference) macro average over the suite's datasets; empty unless it has them all."""
        tables = {name: numbers(evaluation.metrics.get(name)) for name in self.suite_members.get(suite, ())}
        return macro_average(tables) if tables and all(tables.values()) else {}

    def suite_columns(self, evaluation: Evaluation) -> dict[str, float]:
        """`suite:<suite>/<metric>` columns of one row."""
        return {f"{SUITE_PREFIX}{suite}/{metric}": value for suite in self.suite_members
                for metric, value in self.suite_average(evaluation, suite).items()}

    def flat(self) -> dict[str, float]:
        """The trained row's columns as sweep_results.csv names them."""
        row = {**self.trained.flat(), **self.suite_columns(self.trained)}
        for section in COST_SECTIONS:
            row.update({f"{section}.{key}": value for key, value in numbers(getattr(self, section)).items()})
        return row


# The fields that hold a JSON object: read back only when the file holds one there.
OBJECT_FIELDS = tuple(name for name, kind in get_type_hints(JobResult).items() if kind == dict | None)


def reference(per_dataset: Any) -> Evaluation:
    entries = {str(name): mapping(entry) for name, entry in mapping(per_dataset).items()}
    return Evaluation(
        {name: mapping(entry.get("metrics")) for name, entry in entries.items()},
        {name: mapping(entry.get("sparsity")) for name, entry in entries.items()},
    )


def job_file(path: str | Path, name: str) -> Path:
    """A job folder's file `name`; a path ending in .json is taken as the file itself."""
    path = Path(path)
    return path if path.suffix == ".json" else path / name


# --- per_query.json -------------------------------------------------------------------------------------------

def write_per_query(path: str | Path, rows: Mapping[str, Mapping[str, PerQuery]]) -> Path:
    """Write {row: {dataset: per_query(qrels, run)}} atomically into the job folder (or to the .json path given)."""
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"per-query rows must be among {ROWS}, got {sorted(unknown)}")
    payload = {
        row: {dataset: {metric: dict(values) for metric, values in by_metric.items()} for dataset, by_metric in datasets.items()}
        for row, datasets in rows.items()
    }
    target = job_file(path, PER_QUERY_FILE)
    write_json_atomic(target, payload)
    return target


def read_per_query(folder: str | Path) -> dict[str, dict[str, PerQuery]]:
    """{row: {dataset: {metric: {query_id: value}}}}; empty when the job wrote none (older jobs, failures) or the
    file cannot be read: per-query values only add significance to a report, they never break it."""
    try:
        payload = json.loads(job_file(folder, PER_QUERY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {
        row: {
            str(dataset): {str(metric): numbers(values) for metric, values in mapping(by_metric).items()}
            for dataset, by_metric in mapping(datasets).items()
        }
        for row, datasets in mapping(payload).items() if row in ROWS
    }
