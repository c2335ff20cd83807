"""Reading a Hydra multirun folder into one row per job, the grid points, the swept axes and the reference rows,
with each job's per-query values and query groups for the statistics (significance.py), which run apart.

Every job folder is read defensively: a sweep is reported while jobs are still running, after some
crashed, or after a disk filled up, so a missing, partial or corrupt results.json becomes a row with a
status instead of an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from omegaconf import OmegaConf

from splade_peft.data.exposure import EXPOSED, SEEN, UNSEEN
from splade_peft.labels import REFERENCE_LABELS, ZERO_SHOT
from splade_peft.results import AVERAGE, COMPLETED, QUERY_GROUPS_FILE, RESULTS_FILE, SUITE_PREFIX, JobResult, mapping, numbers, read_per_query
from splade_peft.sweep.points import JOBS, SEED_KEY, grid_keys, point_frame
from splade_peft.sweep.values import display_value, grid_sort_key, natural_key, short_names

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"

NOT_STARTED, UNREADABLE = "not started", "unreadable"
DELETED = "(deleted)"  # the value shown for an override that removed its key (~key)
DEFAULT_METRIC = "ndcg@10"
METRIC_LABELS = {"mrr@10": "MRR@10", "recall@100": "R@100", "recall@1000": "R@1000", "ndcg@10": "nDCG@10"}
COST_COLUMNS = (
    "params.trainable", "params.total", "params.adapter_bytes",
    "timing.train_s", "timing.encode_s", "timing.index_s", "timing.search_s",
    "memory.peak_rss_mb",
)
# The settings a report needs from the jobs' configs (stored unresolved, so read through OmegaConf).
SETTINGS = ("sweep.name", "sweep.question", "sweep.metric", "sweep.control", "sweep.family", "sweep.test", "sweep.margin",
            "sweep.out_of_domain", "logger.name", "logger.project", "logger.group", "logger.mode")
DEV_PREFIX = "dev."  # results.json `dev` ({metric: value}) as columns: what the best row is chosen on
QUERY_GROUPS = (SEEN, EXPOSED, UNSEEN)  # query_groups.json's groups (data/exposure.py)

Groups = dict[str, dict[str, set[str]]]  # dataset -> "seen"/"exposed"/"unseen" -> query ids


@dataclass(frozen=True)
class Grid:
    """The points a multirun launched (seeds aside), each as {override key: value}; `swept`: the keys it varies."""

    points: list[dict[str, str]]
    swept: list[str]

    def label(self, point: Mapping[str, str]) -> str:
        names = short_names(self.swept)
        return ", ".join(f"{names[key]}={point[key]}" for key in self.swept) or "the grid's one point"


@dataclass
class Job:
    name: str
    status: str
    error: str = ""
    overrides: dict[str, str] | None = None  # None: unknown (no overrides file and no readable results)
    result: JobResult | None = None
    per_query: dict = field(default_factory=dict)  # per_query.json: {row: {dataset: {metric: {query_id: value}}}}
    query_groups: Groups = field(default_factory=dict)  # query_groups.json, as sets of query ids

    @cached_property
    def config(self) -> Any:
        """The saved config as OmegaConf (None without one), created once: settings are read from it per point."""
        return OmegaConf.create(self.result.config) if self.result and self.result.config else None


@dataclass
class Sweep:
    directory: Path
    frame: pd.DataFrame  # one row per job, sorted by the swept keys: the sweep_results.csv table
    points: pd.DataFrame  # one row per grid point (seeds collapsed: means, "<column> std", "seeds") or unfinished job
    references: pd.DataFrame  # index BM25, zero-shot (labels.py); the same "<dataset>/<key>" columns as frame
    swept: list[str]
    fixed: dict[str, str]
    datasets: list[str]  # evaluation datasets, without "average"
    settings: dict[str, Any]  # SETTINGS found in the jobs' configs (lists for sweep.family, sweep.out_of_domain)
    jobs: list[Job]  # in frame order, with their per-query values and query groups
    grid: Grid | None  # what multirun.yaml launched; None without one or for a search
    trained_on: list[str]  # the training corpora the jobs' configs name
    zero_shot_shared: bool  # False when the grid changes the zero-shot model (each row then has its own)

    @property
    def metric(self) -> str:
        """The study's objective metric (config.sweep.metric), nDCG@10 unless the study names another."""
        return study_metric(self.settings)

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == COMPLETED]

    @property
    def grid_keys(self) -> list[str]:
        """The swept keys that make a grid point: all but the seed, whose values are repetitions."""
        return grid_keys(self.swept)

    @property
    def seeded(self) -> bool:
        return SEED_KEY in self.swept

    @property
    def completed_points(self) -> pd.DataFrame:
        return self.points[self.points["status"] == COMPLETED]

    @property
    def logged_to_wandb(self) -> bool:
        return self.settings.get("logger.name") == "wandb"

    @property
    def wandb_group(self) -> str | None:
        return self.settings.get("logger.group")

    def grid_labels(self, frame: pd.DataFrame) -> list[str]:
        """Short point labels such as "r=4, negatives=2" (the job folder when nothing but seeds was swept)."""
        return grid_labels(frame, self.grid_keys)

    @property
    def per_query(self) -> dict[str, dict]:
        """per_query.json of each completed job, by job folder."""
        return {job.name: job.per_query for job in self.jobs}

    @property
    def query_groups(self) -> dict[str, Groups]:
        return {job.name: job.query_groups for job in self.jobs}

    def setting(self, index: Any, key: str) -> Any:
        """A point's value of a config key: its first job's override, else its saved config's (None: unknown)."""
        job = next((job for job in self.jobs if job.name == self.points.at[index, JOBS][0]), None)
        if job is None:
            return None
        if job.overrides and key in job.overrides:
            return job.overrides[key]
        return select_setting(job.config, key) if job.config is not None else None


def grid_labels(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    if not keys:
        return list(frame["job"])
    names = short_names(keys)
    return [", ".join(f"{names[key]}={display_value(row[key])}" for key in keys) for _, row in frame.iterrows()]


def study_metric(settings: dict[str, Any]) -> str:
    metric = settings.get("sweep.metric")
    return metric if metric in METRIC_LABELS else DEFAULT_METRIC


# --- small, forgiving accessors -------------------------------------------------------------------------

def listing(value: Any) -> list:
    return value if isinstance(value, list) else []


# --- overrides --------------------------------------------------------------------------------------------

@cache
def override_parser() -> OverridesParser:
    return OverridesParser.create()


def parse_override(line: str) -> Override | None:
    """Hydra's reading of one override line; None for a line Hydra cannot parse (so could not have applied)."""
    try:
        return override_parser().parse_override(line)
    except HydraException:
        return None


def typed_value(override: Override) -> str:
    """The value as the user typed it: Hydra's own string of a parsed value turns 1e-4 into 0.0001."""
    return override.input_line[len(override.get_key_element()) + 1:]


def parse_overrides(entries: Any) -> dict[str, str] | None:
    """A job's overrides -> {config key: value as typed}: +/++ prefixes and a group's @package do not change the
    key; a deletion (~key) reads DELETED."""
    if not isinstance(entries, list):
        return None
    parsed = filter(None, (parse_override(str(entry)) for entry in entries))
    return {override.key_or_group: DELETED if override.is_delete() else typed_value(override) for override in parsed}


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
    keys = []
    for override in filter(None, map(parse_override, lines)):
        if override.is_sweep_override() and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def declared_grid(multirun: dict) -> Grid | None:
    """The points the multirun launched, seeds aside: its sweeps (sweeper params, then the command line's task
    overrides, which win) expanded, each point with the launch's fixed overrides; None without a multirun.yaml,
    for a search (Optuna samples, it declares no grid) or for a sweep this parser cannot enumerate."""
    hydra_cfg = mapping(multirun.get("hydra"))
    sweeper = mapping(hydra_cfg.get("sweeper"))
    if not hydra_cfg or "optuna" in str(sweeper.get("_target_", "")).lower():
        return None
    lines = [f"{key}={value}" for key, value in mapping(sweeper.get("params")).items()]
    lines += [str(line) for line in listing(mapping(hydra_cfg.get("overrides")).get("task"))]
    values = {}
    for override in map(parse_override, lines):
        if override is None:
            return None
        key = override.key_or_group
        if override.is_delete() or is_bookkeeping(key) or key == SEED_KEY:
            continue
        if not override.is_sweep_override():
            values[key] = [override.get_value_element_as_str()]
        elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
            values[key] = list(override.sweep_string_iterator())
        else:
            return None
    swept = [key for key, options in values.items() if len(options) > 1]
    return Grid([dict(zip(values, combination)) for combination in product(*values.values())], swept)


def varying_keys(known: list[dict[str, str]]) -> list[str]:
    """Override keys whose value differs between jobs (a key some jobs lack counts as differing)."""
    keys = list(dict.fromkeys(key for overrides in known for key in overrides))
    return [key for key in keys if len({overrides.get(key) for overrides in known}) > 1]


# Override keys that say how a job is filed and logged, not what it computes: never an axis of the study, even
# when jobs started by different commands (a selection stage confirmed into an earlier folder) spell them apart.
BOOKKEEPING_PREFIXES = ("sweep", "logger", "hydra.")


def is_bookkeeping(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix.rstrip(".") + ".") for prefix in BOOKKEEPING_PREFIXES)


MISSING_VALUE = object()


def saved_configs(jobs: list[Job]) -> list | None:
    """Every job's saved config as OmegaConf, or None when a job has none (then no key can be compared)."""
    configs = [job.config for job in jobs]
    return configs if configs and all(config is not None for config in configs) else None


def same_in_every_config(key: str, configs: list | None) -> bool:
    """Whether every job's saved config holds `key` with one value: a key overridden in some jobs to what the
    others have by default (eval.selection_only=false) is not an axis."""
    if configs is None:
        return False
    values = set()
    for config in configs:
        if OmegaConf.select(config, key, default=MISSING_VALUE) is MISSING_VALUE:
            return False
        values.add(repr(select_setting(config, key)))
    return len(values) == 1


# --- one job ----------------------------------------------------------------------------------------------

def is_job_folder(folder: Path) -> bool:
    # Hidden folders (.submitit) and the report's own wandb/ folder hold neither file.
    return folder.is_dir() and not folder.name.startswith(".") and (
        (folder / RESULTS_FILE).exists() or (folder / OVERRIDES_FILE).exists()
    )


def read_job(folder: Path) -> Job:
    overrides = parse_overrides(read_yaml(folder / OVERRIDES_FILE))
    if not (folder / RESULTS_FILE).exists():
        return Job(folder.name, NOT_STARTED, overrides=overrides)
    try:
        result = JobResult.read(folder)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return Job(folder.name, UNREADABLE, f"{type(error).__name__}: {error}", overrides)
    if overrides is None:
        overrides = parse_overrides(result.overrides)
    if result.status != COMPLETED:
        return Job(folder.name, result.status, result.error or "", overrides, result)
    return Job(folder.name, result.status, result.error or "", overrides, result, read_per_query(folder), read_query_groups(folder))


def read_query_groups(folder: Path) -> Groups:
    """query_groups.json as {dataset: {"seen": ids, "unseen": ids}}; empty when absent or unreadable (the
    split only adds a table to a report, it never breaks one)."""
    try:
        payload = json.loads((folder / QUERY_GROUPS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {
        str(dataset): {group: set(map(str, ids)) for group in QUERY_GROUPS if isinstance(ids := mapping(groups).get(group), list)}
        for dataset, groups in mapping(payload).items() if mapping(groups)
    }


ZERO_SHOT_PREFIX = "zero_shot."  # a job's own zero-shot columns, when the grid changes the zero-shot model


def own_zero_shots(jobs: list[Job]) -> list[dict[str, float]]:
    return [job.result.reference_rows["zero_shot"].flat() for job in jobs
            if job.status == COMPLETED and "zero_shot" in job.result.reference_rows]


def zero_shot_varies(jobs: list[Job]) -> bool:
    """Whether the grid changes the zero-shot model itself (pooling, attention mask, backbone, ...), so that
    no single zero-shot row stands for every job."""
    return len({json.dumps(row, sort_keys=True) for row in own_zero_shots(jobs)}) > 1


def reference_frame(jobs: list[Job], zero_shot_shared: bool) -> pd.DataFrame:
    """BM25 and zero-shot rows from the first completed job that has them: the jobs of a sweep share the
    cached reference runs -- except the zero-shot row when the grid changes it (each row then shows its own)."""
    source = next((job.result for job in jobs if job.status == COMPLETED and job.result.reference_rows), None)
    references = source.reference_rows if source else {}
    shown = {system: label for system, label in REFERENCE_LABELS.items() if system != "zero_shot" or zero_shot_shared}
    rows = {label: {**references[system].flat(), **source.suite_columns(references[system])}
            for system, label in shown.items() if system in references}
    # The dev figure before training, where the first job measured it (a selection stage has no other row).
    started = next((job.result.dev_at_start for job in jobs if job.status == COMPLETED and job.result.dev_at_start), None)
    if started and "zero_shot" in shown:
        rows.setdefault(ZERO_SHOT, {}).update({f"{DEV_PREFIX}{m}": v for m, v in numbers(started).items()})
    rows = {label: row for label, row in rows.items() if row}
    return pd.DataFrame.from_dict(rows, orient="index")


def evaluation_datasets(jobs: list[Job], references: pd.DataFrame) -> list[str]:
    names = [str(name) for job in jobs if job.status == COMPLETED for name in job.result.trained.metrics]
    names += [column.split("/", 1)[0] for column in references.columns if "/" in column]
    return [name for name in dict.fromkeys(names) if name != AVERAGE and not name.startswith(SUITE_PREFIX)]


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


def own_zero_shot_columns(job: Job) -> dict[str, float]:
    zero_shot = job.result.reference_rows.get("zero_shot") if job.result else None
    return {f"{ZERO_SHOT_PREFIX}{column}": value for column, value in (zero_shot.flat() if zero_shot else {}).items()}


def dev_columns(job: Job) -> dict[str, float]:
    dev = job.result.dev if job.result else None
    return {f"{DEV_PREFIX}{metric}": value for metric, value in numbers(dev).items()}


def job_frame(jobs: list[Job], keys: list[str], datasets: list[str], zero_shot_shared: bool) -> pd.DataFrame:
    records = [
        {"job": job.name, "status": job.status, "error": job.error, **(job.overrides or {}), **(job.result.flat() if job.result else {}),
         **dev_columns(job), **({} if zero_shot_shared else own_zero_shot_columns(job))}
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

def select_setting(config: Any, key: str) -> str | list[str] | None:
    """One scalar or list setting, with interpolations such as `group: ${sweep.name}` resolved where they can
    be outside Hydra; None when absent, unresolvable or a mapping."""
    try:
        value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
        if OmegaConf.is_list(value):
            return [str(entry) for entry in OmegaConf.to_container(value, resolve=True)]
    except Exception:  # OmegaConf raises several error types on configs it cannot walk; the setting is then unknown
        return None
    return None if value is None or OmegaConf.is_config(value) else str(value)


def read_settings(configs: list[dict]) -> dict[str, Any]:
    """The first value of each SETTINGS key across the configs (jobs first, then multirun.yaml)."""
    settings: dict[str, Any] = {}
    for raw in configs:
        try:
            config = OmegaConf.create(raw)
        except Exception:  # a config OmegaConf refuses (odd keys) just contributes nothing
            continue
        for key in SETTINGS:
            if key not in settings and (value := select_setting(config, key)):
                settings[key] = value
    return settings


def corpus_name(entry: dict, default: str | None = None) -> str | None:
    """The name a collection spec loads under: its `name`, else its folder's name."""
    return entry.get("name") or (Path(str(entry["path"])).name if entry.get("path") else default)


def training_corpora(jobs: list[Job]) -> list[str]:
    """The collections the jobs trained on, by their saved configs: data and each data.mixture entry."""
    names = []
    for job in jobs:
        data = mapping(mapping(job.result.config if job.result else None).get("data"))
        names.append(corpus_name(data))
        names += [corpus_name(mapping(entry), key) for key, entry in mapping(mapping(data.get("mixture")).get("datasets")).items()]
    return [str(name) for name in dict.fromkeys(names) if name]


# --- the sweep ------------------------------------------------------------------------------------------------

def load_sweep(sweep_dir: str | Path) -> Sweep:
    directory = Path(sweep_dir)
    multirun = mapping(read_yaml(directory / MULTIRUN_FILE))
    folders = sorted((folder for folder in directory.iterdir() if is_job_folder(folder)), key=lambda f: natural_key(f.name))
    jobs = [read_job(folder) for folder in folders]
    known = [job.overrides for job in jobs if job.overrides is not None]
    configs = saved_configs(jobs)
    swept = [key for key in dict.fromkeys(declared_sweep_keys(multirun) + varying_keys(known))
             if not is_bookkeeping(key) and not same_in_every_config(key, configs)]
    fixed = {key: value for overrides in known for key, value in overrides.items() if key not in swept}
    # sort is stable: jobs at the same grid point stay in folder order
    jobs.sort(key=lambda job: [grid_sort_key((job.overrides or {}).get(key)) for key in swept])
    zero_shot_shared = not zero_shot_varies(jobs)
    references = reference_frame(jobs, zero_shot_shared)
    datasets = evaluation_datasets(jobs, references)
    configs = [job.result.config for job in jobs if job.result and job.result.config] + [multirun]
    settings = read_settings(configs)
    frame = job_frame(jobs, swept + list(fixed), datasets, zero_shot_shared)
    return Sweep(
        directory=directory,
        frame=frame,
        points=point_frame(frame, swept, list(fixed)),
        references=references,
        swept=swept,
        fixed=fixed,
        datasets=datasets,
        settings=settings,
        jobs=jobs,
        grid=declared_grid(multirun),
        trained_on=training_corpora(jobs),
        zero_shot_shared=zero_shot_shared,
    )


def latest_sweep(root: str | Path) -> Path:
    """The most recently written sweep (a folder holding multirun.yaml) under root."""
    found = sorted(Path(root).glob(f"**/{MULTIRUN_FILE}"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {MULTIRUN_FILE} under {root}: point SWEEP_DIR at a sweep folder")
    return found[-1].parent
