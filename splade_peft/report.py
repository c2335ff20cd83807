"""`python -m splade_peft.report <sweep_dir>`: (re)build a sweep's report and print its table.

Writes sweep_results.csv, report.md and plot_*.png into the sweep folder, then logs them to W&B when the
jobs did (offline without an API key; --no-wandb skips it).
"""

import argparse
import sys
from pathlib import Path

from splade_peft.sweep import build_report, log_report_to_wandb


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m splade_peft.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun folder (one subfolder per job)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = build_report(args.sweep_dir)
    print(report.table, end="\n\n")
    for path in report.paths:
        print(path)
    if not args.no_wandb and log_report_to_wandb(report):
        print("W&B: report run logged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
