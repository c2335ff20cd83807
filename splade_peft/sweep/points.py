"""Grid points: jobs that differ only by `seed` repeat one point, reported once as mean, standard
deviation and the number of seeds; without a swept seed every job is its own point."""

from __future__ import annotations

import pandas as pd

from splade_peft.results import COMPLETED
from splade_peft.sweep.values import display_value, grid_sort_key

SEED_KEY = "seed"
SEEDS = "seeds"  # completed jobs behind a point (0 for an unfinished job's row)
JOBS = "jobs"  # the job folders behind a point
STD_SUFFIX = " std"  # "<column> std": the standard deviation over seeds (NaN for a single seed)
LEADING = ("job", "status", "error")


def grid_keys(swept: list[str]) -> list[str]:
    return [key for key in swept if key != SEED_KEY]


def std_column(column: str) -> str:
    return column + STD_SUFFIX


def point_key(row: pd.Series, swept: list[str]) -> tuple:
    if SEED_KEY not in swept:
        return (row["job"],)
    return tuple(display_value(row.get(key)) for key in grid_keys(swept))


def collapse(jobs: pd.DataFrame, keys: list[str], measured: list[str]) -> dict:
    """One point from its completed jobs: the mean of every measured column, the spread of each."""
    first = jobs.iloc[0]
    point = {"job": ", ".join(jobs["job"]), "status": COMPLETED, "error": "", JOBS: tuple(jobs["job"]), SEEDS: len(jobs)}
    point.update({key: first[key] for key in keys})
    for column in measured:
        values = pd.to_numeric(jobs[column], errors="coerce").astype(float)
        point[column] = values.mean()
        point[std_column(column)] = values.std(ddof=1) if values.count() > 1 else float("nan")
    return point


def unfinished(row: pd.Series, keys: list[str], measured: list[str]) -> dict:
    return {**{column: row[column] for column in (*LEADING, *keys, *measured)}, JOBS: (row["job"],), SEEDS: 0}


def point_frame(frame: pd.DataFrame, swept: list[str], fixed: list[str]) -> pd.DataFrame:
    """Completed jobs grouped into points, unfinished jobs kept as rows of their own (their status is
    shown), all in grid order; every column of `frame` but its overrides is measured."""
    keys = [key for key in grid_keys(swept) if key in frame]
    measured = [column for column in frame.columns if column not in (*LEADING, *swept, *fixed)]
    done = frame[frame["status"] == COMPLETED]
    groups: dict[tuple, list[int]] = {}
    for index, row in done.iterrows():
        groups.setdefault(point_key(row, swept), []).append(index)
    rows = [collapse(done.loc[indices], keys, measured) for indices in groups.values()]
    rows += [unfinished(row, keys, measured) for _, row in frame[frame["status"] != COMPLETED].iterrows()]
    rows.sort(key=lambda point: [grid_sort_key(point.get(key)) for key in keys])
    return pd.DataFrame.from_records(rows, columns=[*LEADING, *keys, SEEDS, JOBS, *spread(measured)])


def spread(measured: list[str]) -> list[str]:
    return [name for column in measured for name in (column, std_column(column))]
