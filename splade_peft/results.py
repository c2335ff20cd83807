"""One job's result record: results.json read into one object and flattened one way, for the tracker, the
run's summary table and the sweep report alike; and per_query.json, the per-query values behind its means.

Flat column names (the sweep_results.csv columns): `<dataset>/<key>` for metrics and sparsity, with the
macro average over datasets as dataset `average`; `params.<key>`, `timing.<key>`, `memory.<key>`.

per_query.json, in the job folder: {row: {dataset: {metric: {query_id: value}}}}, row one of ROWS, metric a
results.json metric name (ndcg@10, mrr@10, ...), one value per judged query as `evaluation.metrics.per_query`
gives them (0 for a query the run has no documents for).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splade_peft.evaluation.metrics import macro_average
from splade_peft.records import write_json_atomic

RESULTS_FILE = "results.json"
COMPLETED = "completed"
PER_QUERY_FILE = "per_query.json"
AVERAGE = "average"
REFERENCE_SYSTEMS = ("bm25", "zero_shot")
ROWS = ("trained", *REFERENCE_SYSTEMS)
SECTIONS = ("params", "timing", "memory")

PerQuery = dict[str, dict[str, float]]  # metric -> query id -> value


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
    status: str
    error: str
    overrides: list[str] | None
    config: dict
    datasets: list[str]  # evaluation datasets in the order the job evaluated them, without "average"
    trained: Evaluation
    references: dict[str, Evaluation]  # REFERENCE_SYSTEMS present in the record
    sections: dict[str, dict[str, float]]  # SECTIONS: params, timing, memory
    raw: dict  # the record as written, for fields no reader above needs

    @classmethod
    def from_json(cls, source: str | Path | Mapping) -> JobResult:
        """From a results.json path or its parsed payload; ValueError (JSON errors included) when the
        file is not one JSON object, OSError when it cannot be read."""
        payload = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else source
        if not isinstance(payload, Mapping):
            raise ValueError(f"expected a JSON object, found {type(payload).__name__}")
        metrics = mapping(payload.get("metrics"))
        evaluated = list(mapping(mapping(payload.get("data")).get("eval"))) or list(metrics)
        overrides = payload.get("overrides")
        return cls(
            status=str(payload.get("status") or "unknown"),
            error=str(payload.get("error") or ""),
            overrides=[str(entry) for entry in overrides] if isinstance(overrides, list) else None,
            config=mapping(payload.get("config")),
            datasets=[str(name) for name in evaluated if name != AVERAGE],
            trained=Evaluation(metrics, mapping(payload.get("sparsity"))),
            references={system: reference(mapping(payload.get("references")).get(system)) for system in REFERENCE_SYSTEMS
                        if mapping(mapping(payload.get("references")).get(system))},
            sections={section: numbers(payload.get(section)) for section in SECTIONS},
            raw=dict(payload),
        )

    def flat(self) -> dict[str, float]:
        """The trained row's columns as sweep_results.csv names them."""
        row = self.trained.flat()
        for section, values in self.sections.items():
            row.update({f"{section}.{key}": value for key, value in values.items()})
        return row


def reference(per_dataset: Any) -> Evaluation:
    entries = {str(name): mapping(entry) for name, entry in mapping(per_dataset).items()}
    return Evaluation(
        {name: mapping(entry.get("metrics")) for name, entry in entries.items()},
        {name: mapping(entry.get("sparsity")) for name, entry in entries.items()},
    )


# --- per_query.json -------------------------------------------------------------------------------------------

def per_query_path(path: str | Path) -> Path:
    """A job folder's per_query.json; a path ending in .json is taken as the file itself."""
    path = Path(path)
    return path if path.suffix == ".json" else path / PER_QUERY_FILE


def write_per_query(path: str | Path, rows: Mapping[str, Mapping[str, PerQuery]]) -> Path:
    """Write {row: {dataset: per_query(qrels, run)}} atomically into the job folder (or to the .json path given)."""
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"per-query rows must be among {ROWS}, got {sorted(unknown)}")
    payload = {
        row: {dataset: {metric: dict(values) for metric, values in by_metric.items()} for dataset, by_metric in datasets.items()}
        for row, datasets in rows.items()
    }
    target = per_query_path(path)
    write_json_atomic(target, payload)
    return target


def read_per_query(folder: str | Path) -> dict[str, dict[str, PerQuery]]:
    """{row: {dataset: {metric: {query_id: value}}}}; empty when the job wrote none (older jobs, failures) or the
    file cannot be read: per-query values only add significance to a report, they never break it."""
    try:
        payload = json.loads(per_query_path(folder).read_text())
    except (OSError, ValueError):
        return {}
    return {
        row: {
            str(dataset): {str(metric): numbers(values) for metric, values in mapping(by_metric).items()}
            for dataset, by_metric in mapping(datasets).items()
        }
        for row, datasets in mapping(payload).items() if row in ROWS
    }
