"""Reading a Hydra multirun folder into one row per job, the swept axes, the study and the reference rows.

Every job folder is read defensively: a sweep is reported while jobs are still running, after some
crashed, or after a disk filled up, so a missing, partial or corrupt results.json becomes a row with a
status instead of an exception.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

RESULTS_FILE = "results.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"

COMPLETED, NOT_STARTED, UNREADABLE = "completed", "not started", "unreadable"
AVERAGE = "average"
DEFAULT_METRIC = "ndcg@10"
METRIC_LABELS = {"mrr@10": "MRR@10", "recall@100": "R@100", "recall@1000": "R@1000", "ndcg@10": "nDCG@10"}
REFERENCE_LABELS = {"bm25": "BM25", "zero_shot": "zero-shot"}
COST_COLUMNS = (
    "params.trainable", "params.total", "params.adapter_bytes",
    "timing.train_s", "timing.encode_s", "timing.index_s", "timing.search_s",
    "memory.peak_rss_mb",
)
# The settings a report needs from the jobs' configs (stored unresolved, so read through OmegaConf).
SETTINGS = ("sweep.name", "sweep.question", "sweep.metric", "sweep.wandb_group", "logger.name", "logger.project", "logger.group")


@dataclass
class Job:
    name: str
    status: str
    error: str = ""
    overrides: dict[str, str] | None = None  # None: unknown (no overrides file and no readable results)
    results: dict = field(default_factory=dict)


@dataclass
class Sweep:
    directory: Path
    frame: pd.DataFrame  # one row per job, sorted by the swept keys: the sweep_results.csv table
    references: pd.DataFrame  # index "BM25", "zero-shot"; the same "<dataset>/<key>" columns as frame
    swept: list[str]
    fixed: dict[str, str]
    datasets: list[str]  # evaluation datasets, without "average"
    settings: dict[str, str]  # SETTINGS found in the jobs' configs

    @property
    def metric(self) -> str:
        """The study's objective metric (config.sweep.metric), nDCG@10 unless the study names another."""
        metric = self.settings.get("sweep.metric")
        return metric if metric in METRIC_LABELS else DEFAULT_METRIC

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == COMPLETED]

    @property
    def logged_to_wandb(self) -> bool:
        return self.settings.get("logger.name") == "wandb"

    @property
    def wandb_group(self) -> str | None:
        return self.settings.get("logger.group") or self.settings.get("sweep.wandb_group")

    def grid_labels(self, frame: pd.DataFrame) -> list[str]:
        """Short point labels such as "r=4, negatives=2" (the job folder when nothing was swept)."""
        if not self.swept:
            return list(frame["job"])
        names = short_names(self.swept)
        return [", ".join(f"{names[key]}={display_value(row[key])}" for key in self.swept) for _, row in frame.iterrows()]


# --- small, forgiving accessors -------------------------------------------------------------------------

def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def listing(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_number(value: Any) -> float | None:
    """A finite-or-infinite number from a JSON value or an override string; None for text, booleans and NaN."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def display_value(value: Any) -> str:
    """An override value as the user typed it; pandas may have read "4" back as 4.0."""
    if is_missing(value):
        return "?"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def short_names(keys: list[str]) -> dict[str, str]:
    """The last dotted part of each key ("lora.r" -> "r") unless two keys would share it."""
    last = {key: key.rsplit(".", 1)[-1] for key in keys}
    return {key: name if list(last.values()).count(name) == 1 else key for key, name in last.items()}


def grid_sort_key(value: Any) -> tuple:
    """Numbers first and by value (ranks 1, 4, 16, not 1, 16, 4), then text, then missing values."""
    if is_missing(value):
        return (2, 0.0, "")
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def natural_key(name: str) -> tuple:
    """Job folders in numeric order ("2_..." before "10_..."); digits sit at the odd split positions."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name)))


# --- overrides --------------------------------------------------------------------------------------------

def parse_overrides(entries: Any) -> dict[str, str] | None:
    """`key=value` strings -> {key: value as given}; Hydra's +/++ prefixes do not change the key."""
    if not isinstance(entries, list):
        return None
    overrides = {}
    for entry in map(str, entries):
        key, _, value = entry.partition("=")
        if key.startswith("~"):  # Hydra's deletion syntax: the key is removed from the config
            key, value = key[1:], "(deleted)"
        overrides[key.lstrip("+")] = value
    return overrides


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return None


def declared_sweep_keys(multirun: dict) -> list[str]:
    """Keys that multirun.yaml declares as sweeps (`lora.r=1,4`, `range(...)`, sweeper params, Optuna spaces)."""
    hydra_cfg = mapping(multirun.get("hydra"))
    lines = [str(line) for line in listing(mapping(hydra_cfg.get("overrides")).get("task"))]
    lines += [f"{key}={value}" for key, value in mapping(mapping(hydra_cfg.get("sweeper")).get("params")).items()]
    parser, keys = OverridesParser.create(), []
    for line in lines:
        try:
            override = parser.parse_override(line)
        except HydraException:  # an override this Hydra cannot parse cannot have been swept by it either
            continue
        if override.is_sweep_override() and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def varying_keys(known: list[dict[str, str]]) -> list[str]:
    """Override keys whose value differs between jobs (a key some jobs lack counts as differing)."""
    keys = list(dict.fromkeys(key for overrides in known for key in overrides))
    return [key for key in keys if len({overrides.get(key) for overrides in known}) > 1]


# --- one job ----------------------------------------------------------------------------------------------

def is_job_folder(folder: Path) -> bool:
    # Hidden folders (.submitit) and the report's own wandb/ folder hold neither file.
    return folder.is_dir() and not folder.name.startswith(".") and (
        (folder / RESULTS_FILE).exists() or (folder / OVERRIDES_FILE).exists()
    )


def read_results(path: Path) -> dict:
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, found {type(payload).__name__}")
    return payload


def read_job(folder: Path) -> Job:
    overrides = parse_overrides(read_yaml(folder / OVERRIDES_FILE))
    if not (folder / RESULTS_FILE).exists():
        return Job(folder.name, NOT_STARTED, overrides=overrides)
    try:
        results = read_results(folder / RESULTS_FILE)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return Job(folder.name, UNREADABLE, f"{type(error).__name__}: {error}", overrides)
    if overrides is None:
        overrides = parse_overrides(results.get("overrides"))
    return Job(folder.name, str(results.get("status") or "unknown"), str(results.get("error") or ""), overrides, results)


# --- flattening results into columns ------------------------------------------------------------------------

def numbers(values: dict) -> dict[str, float | int]:
    """The numeric entries, integers kept as integers (counts, parameters) so the CSV shows them as such."""
    return {
        key: value if isinstance(value, int) else number
        for key, value in values.items() if (number := as_number(value)) is not None
    }


def with_average(per_dataset: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Add the macro average over datasets where the results carry none (sparsity, reference rows),
    over the keys every dataset has, the way the pipeline averages metrics."""
    if AVERAGE in per_dataset or not per_dataset:
        return per_dataset
    common = set.intersection(*(set(values) for values in per_dataset.values()))
    average = {key: sum(values[key] for values in per_dataset.values()) / len(per_dataset) for key in sorted(common)}
    return {**per_dataset, AVERAGE: average} if average else per_dataset


def per_dataset_columns(per_dataset: dict) -> dict[str, float]:
    tables = {str(name): numbers(values) for name, values in per_dataset.items() if isinstance(values, dict)}
    return {f"{name}/{key}": value for name, values in with_average(tables).items() for key, value in values.items()}


def flatten_results(results: dict) -> dict[str, float]:
    row = per_dataset_columns(mapping(results.get("metrics")))
    row.update(per_dataset_columns(mapping(results.get("sparsity"))))
    for section in ("params", "timing", "memory"):
        row.update({f"{section}.{key}": value for key, value in numbers(mapping(results.get(section))).items()})
    return row


def reference_frame(jobs: list[Job]) -> pd.DataFrame:
    """BM25 and zero-shot rows from the first completed job that has them: every job of a sweep shares
    the same cached reference runs."""
    references = next(
        (refs for job in jobs if job.status == COMPLETED and (refs := mapping(job.results.get("references")))), {}
    )
    rows = {}
    for system, label in REFERENCE_LABELS.items():
        entries = {name: mapping(entry) for name, entry in mapping(references.get(system)).items()}
        row = per_dataset_columns({name: mapping(entry.get("metrics")) for name, entry in entries.items()})
        row.update(per_dataset_columns({name: mapping(entry.get("sparsity")) for name, entry in entries.items()}))
        if row:
            rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def evaluation_datasets(jobs: list[Job], references: pd.DataFrame) -> list[str]:
    names = [str(name) for job in jobs if job.status == COMPLETED for name in mapping(job.results.get("metrics"))]
    names += [column.split("/", 1)[0] for column in references.columns]
    return [name for name in dict.fromkeys(names) if name != AVERAGE]


def column_rank(column: str, datasets: list[str]) -> tuple:
    """Metrics, then sparsity, per dataset (average last), then the cost columns in their usual order."""
    if "/" in column:
        dataset, key = column.split("/", 1)
        dataset_rank = datasets.index(dataset) if dataset in datasets else len(datasets)
        if key in METRIC_LABELS:
            return (0, dataset_rank, list(METRIC_LABELS).index(key), key)
        return (1, dataset_rank, 0, key)
    if column in COST_COLUMNS:
        return (2, 0, COST_COLUMNS.index(column), column)
    return (2, 0, len(COST_COLUMNS), column)


def job_frame(jobs: list[Job], keys: list[str], datasets: list[str]) -> pd.DataFrame:
    records = [
        {"job": job.name, "status": job.status, "error": job.error, **(job.overrides or {}), **flatten_results(job.results)}
        for job in jobs
    ]
    leading = ["job", "status", "error", *keys]
    found = {column for record in records for column in record} | set(COST_COLUMNS)
    measured = sorted(found - set(leading), key=lambda column: column_rank(column, datasets))
    frame = pd.DataFrame.from_records(records, columns=leading + measured)
    return frame.astype({column: "Int64" for column in integer_columns(records, measured)})


def integer_columns(records: list[dict], columns: list[str]) -> list[str]:
    """Columns holding only integers: a job that lacks one would otherwise turn the column into floats."""
    def integers(column: str) -> list:
        return [record[column] for record in records if column in record]

    return [column for column in columns if integers(column) and all(isinstance(v, int) for v in integers(column))]


# --- settings from the configs -------------------------------------------------------------------------------

def select_setting(config: Any, key: str) -> str | None:
    """One scalar setting, with interpolations such as `group: ${sweep.name}` resolved where they can be
    outside Hydra; None when absent, unresolvable or not a scalar."""
    try:
        value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # OmegaConf raises several error types on configs it cannot walk; the setting is then unknown
        return None
    return None if value is None or OmegaConf.is_config(value) else str(value)


def read_settings(configs: list[dict]) -> dict[str, str]:
    """The first value of each SETTINGS key across the configs (jobs first, then multirun.yaml)."""
    settings: dict[str, str] = {}
    for raw in configs:
        try:
            config = OmegaConf.create(raw)
        except Exception:  # a config OmegaConf refuses (odd keys) just contributes nothing
            continue
        for key in SETTINGS:
            if key not in settings and (value := select_setting(config, key)):
                settings[key] = value
    return settings


# --- the sweep ------------------------------------------------------------------------------------------------

def load_sweep(sweep_dir: str | Path) -> Sweep:
    directory = Path(sweep_dir)
    multirun = mapping(read_yaml(directory / MULTIRUN_FILE))
    folders = sorted((folder for folder in directory.iterdir() if is_job_folder(folder)), key=lambda f: natural_key(f.name))
    jobs = [read_job(folder) for folder in folders]
    known = [job.overrides for job in jobs if job.overrides is not None]
    swept = list(dict.fromkeys(declared_sweep_keys(multirun) + varying_keys(known)))
    fixed = {key: value for overrides in known for key, value in overrides.items() if key not in swept}
    # sort is stable: jobs at the same grid point stay in folder order
    jobs.sort(key=lambda job: [grid_sort_key((job.overrides or {}).get(key)) for key in swept])
    references = reference_frame(jobs)
    datasets = evaluation_datasets(jobs, references)
    configs = [mapping(job.results.get("config")) for job in jobs] + [multirun]
    return Sweep(
        directory=directory,
        frame=job_frame(jobs, swept + list(fixed), datasets),
        references=references,
        swept=swept,
        fixed=fixed,
        datasets=datasets,
        settings=read_settings(configs),
    )


def latest_sweep(root: str | Path) -> Path:
    """The most recently written sweep (a folder holding multirun.yaml) under root."""
    found = sorted(Path(root).glob(f"**/{MULTIRUN_FILE}"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {MULTIRUN_FILE} under {root}: point SWEEP_DIR at a sweep folder")
    return found[-1].parent
