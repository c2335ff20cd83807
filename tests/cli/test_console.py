"""`splade-peft <subcommand>`: the console script and `python -m splade_peft.cli` reach each tool as its
`python -m` form does, and the top level answers without importing the tools."""

import subprocess
import sys
from pathlib import Path

import pytest

from splade_peft.cli import SUBCOMMANDS
from tests.helpers import REPO

SCRIPT = Path(sys.executable).parent / "splade-peft"
ENTRIES = {
    "module": [sys.executable, "-m", "splade_peft.cli"],
    "script": [str(SCRIPT)],
}


@pytest.fixture(params=sorted(ENTRIES))
def entry(request) -> list[str]:
    if request.param == "script" and not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} not installed: `pip install -e .` writes it from pyproject's [project.scripts]")
    return ENTRIES[request.param]


def splade_peft(entry: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*entry, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand_with_its_summary(entry):
    finished = splade_peft(entry, "--help")
    assert finished.returncode == 0, finished.stderr
    for name, subcommand in SUBCOMMANDS.items():
        assert f"  {name} " in finished.stdout and subcommand.summary in finished.stdout


def test_no_subcommand_prints_the_listing_and_fails(entry):
    finished = splade_peft(entry)
    assert finished.returncode == 2
    assert all(name in finished.stdout for name in SUBCOMMANDS)


def test_an_unknown_subcommand_is_one_line_naming_the_valid_ones(entry):
    finished = splade_peft(entry, "trian", "lora.r=8")
    assert finished.returncode == 2
    assert finished.stdout == ""
    [line] = finished.stderr.splitlines()
    assert "'trian'" in line and all(name in line for name in SUBCOMMANDS)


def test_the_top_level_imports_no_tool():
    code = "import sys\nfrom splade_peft.cli import main\nmain([])\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hydra', 'pyarrow'}))"
    finished = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.stdout.splitlines()[-1] == "[]"


def test_a_tool_parses_its_own_arguments(entry):
    finished = splade_peft(entry, "teachers", "--help")
    assert finished.returncode == 0, finished.stderr
    assert "--allow-pickle" in finished.stdout
    missing = splade_peft(entry, "teachers", "only-a-source.json")
    assert missing.returncode == 2 and "required: target" in missing.stderr


def test_run_is_the_hydra_job(entry):
    finished = splade_peft(entry, "run", "--help")
    assert finished.returncode == 0, finished.stderr
    assert "powered by Hydra" in finished.stdout and "experiment: " in finished.stdout


def test_run_composes_the_same_config_as_python_m():
    overrides = ["--cfg", "job", "experiment=smoke", "lora.r=3"]
    console = splade_peft(ENTRIES["module"], "run", *overrides)
    direct = subprocess.run([sys.executable, "-m", "splade_peft", *overrides], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert console.returncode == direct.returncode == 0, console.stderr + direct.stderr
    assert console.stdout == direct.stdout and "r: 3" in console.stdout
