"""`python -m splade_peft.confirm <selection sweep> [--top N] [--dry-run] [overrides ...]`: stage 2 of the
study protocol, started from stage 1's folder.

The `--top` grid points of a selection sweep, ranked by their dev figure (results.json `dev`, the sweep's
metric, averaged over seeds), each run again as one multirun: the point's own overrides, then
`eval.selection_only=false` and the overrides given here (an override here replaces the point's value of its
key), typically the seeds and the evaluation that confirms, in a sweep named `<stage 1's name>_confirmation`:

    python -m splade_peft.confirm outputs/sweeps/recipe_selection-scifact_protocol seed=1,2,3
    python -m splade_peft.confirm outputs/sweeps/<grid on eval=nanobeir> --top 2 seed=1,2,3 eval=beir13

So a grid can watch the `nanobeir` proxy while it runs and score `beir13` only for the rows it selects; the
selection itself is always made on dev. NanoBEIR's queries are BEIR test queries, so a row chosen on a
nanobeir (or any test) figure is refused: without dev figures the grid has chosen on test, and confirming on
test would score the choice on the data that made it (`--allow-test-selection` runs it anyway, and says so).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from splade_peft.sweep.load import DEV_PREFIX, load_sweep
from splade_peft.sweep.points import JOBS
from splade_peft.results import AVERAGE, JobResult

# Overrides of a stage-1 job that say where it ran, not what it computed.
PLACEMENT_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")
CONFIRMATION_SUFFIX = "_confirmation"


class SelectionError(Exception):
    """The selection sweep has no row that can be confirmed: the message names the folder and the fix."""


def override_key(entry: str) -> str:
    return entry.split("=", 1)[0].lstrip("+~")


def selected_points(sweep_dir: Path, top: int, allow_test_selection: bool) -> list[tuple[str, float, list[str]]]:
    """(label, dev value, the point's job overrides) of the `top` points, best first."""
    sweep = load_sweep(sweep_dir)
    column = f"{DEV_PREFIX}{sweep.metric}"
    points = sweep.completed_points
    if column not in points or points[column].isna().all():
        if not allow_test_selection:
            raise SelectionError(
                f"{sweep_dir}: no completed job reports a dev {sweep.metric} (results.json `dev`), so its rows can "
                "only have been chosen on test -- rerun the grid with a dev split (data.dev.queries) and "
                "eval.selection_only=true, or pass --allow-test-selection to confirm a row chosen on test anyway")
        column = f"{AVERAGE}/{sweep.metric}"
        print(f"confirm: {sweep_dir} reports no dev figure: rows ranked on the test average, a selection "
              "figure (--allow-test-selection)", file=sys.stderr)
    ranked = points.dropna(subset=[column]).sort_values(column, ascending=False).head(top)
    labels = dict(zip(points.index, sweep.grid_labels(points)))
    return [(labels[index], float(point[column]), job_overrides(sweep_dir / point[JOBS][0]))
            for index, point in ranked.iterrows()]


def job_overrides(folder: Path) -> list[str]:
    overrides = JobResult.read(folder).overrides or []
    return [entry for entry in overrides if override_key(entry) not in PLACEMENT_KEYS]


def sweep_name(point_overrides: list[str], sweep_dir: Path) -> str:
    """Stage 1's study file (`+sweep=<name>`) or folder, with the confirmation suffix."""
    study = next((entry.split("=", 1)[1] for entry in point_overrides if override_key(entry) == "sweep"), sweep_dir.name)
    return study + CONFIRMATION_SUFFIX


def confirmation_command(point_overrides: list[str], given: list[str], name: str) -> list[str]:
    given_keys = {override_key(entry) for entry in given}
    kept = [entry for entry in point_overrides if override_key(entry) not in given_keys | {"eval.selection_only", "sweep.name"}]
    named = [] if "sweep.name" in given_keys else [f"sweep.name={name}"]
    return [sys.executable, "-m", "splade_peft", "-m", *kept, "eval.selection_only=false", *named, *given]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m splade_peft.confirm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="stage 1: a selection sweep's folder")
    parser.add_argument("--top", type=int, default=1, help="how many of its best points on dev to confirm")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--allow-test-selection", action="store_true",
                        help="confirm rows although the grid reports no dev figure (chosen on test)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the confirmation, e.g. seed=1,2,3 eval=beir13")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    if args.top < 1:
        parser.error("--top must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        chosen = selected_points(args.sweep_dir, args.top, args.allow_test_selection)
    except SelectionError as error:
        print(f"confirm: {error}", file=sys.stderr)
        return 2
    if not chosen:
        print(f"confirm: {args.sweep_dir} has no completed job to confirm", file=sys.stderr)
        return 2
    failed = 0
    for label, value, overrides in chosen:
        command = confirmation_command(overrides, args.overrides, sweep_name(overrides, args.sweep_dir))
        print(f"confirm: {label} (dev {value:.4f}): {' '.join(command[1:])}", flush=True)
        if not args.dry_run:
            failed += subprocess.run(command).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
