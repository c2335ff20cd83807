"""Every `lora=` option through the default job path, as `python -m splade_peft` runs a job: BM25 and zero-shot
reference rows, dev metrics at the start and after training, the trained row. One multirun (one process start)
keeps the whole grid cheap; each option is a case of its own."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONF, REPO

pytestmark = pytest.mark.slow

OPTIONS = sorted(path.stem for path in (CONF / "lora").glob("*.yaml"))
EVALUATION_ONLY = {"frozen"}  # nothing trains: its trained row is the zero-shot row
STEPS = 2
# bitsandbytes 0.50 repacks 4-bit weights for CPU inference on CPUs with AVX512-BF16 only: every machine runs the
# job as one here, and backpropagating through a kernel without a backward (what a repacked layer does) is an
# error, as it is on those CPUs, not a warning.
AS_ON_AN_AVX512_BF16_CPU = """
import runpy, warnings
import bitsandbytes.nn.modules

bitsandbytes.nn.modules.has_avx512bf16 = lambda: True
warnings.filterwarnings("error", message=".*an autograd kernel was not registered")
runpy.run_module("splade_peft", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, dict]:
    """{lora option: its results.json} from one multirun over every option. index=exact ranks as Lucene does
    without its indexing, and no W&B run per job: together they take 60 % of the grid's time off."""
    sweep_dir = tmp_path_factory.mktemp("every-adapter")
    completed = subprocess.run(
        [sys.executable, "-c", AS_ON_AN_AVX512_BF16_CPU, "-m", "experiment=smoke", f"lora={','.join(OPTIONS)}",
         f"trainer.max_steps={STEPS}", "data.max_documents=300", "data.max_queries=30", "index=exact", "logger=none",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    results = {option_of(path.parent): json.loads(path.read_text()) for path in sweep_dir.glob("*/results.json")}
    assert results, completed.stderr[-3000:]
    return results


def option_of(job_dir: Path) -> str:
    (option,) = [part.split("=", 1)[1] for part in job_dir.name.split(",") if part.startswith("lora=")]
    return option


@pytest.mark.parametrize("option", OPTIONS)
def test_the_adapter_trains_and_evaluates_through_the_default_job_path(option, jobs):
    results = jobs[option]
    assert results["status"] == "completed", results.get("error")
    dataset = "stdlib-docstrings"
    assert results["references"]["bm25"][dataset]["metrics"]["ndcg@10"] > 0
    assert 0 <= results["references"]["zero_shot"][dataset]["metrics"]["ndcg@10"] <= 1
    assert 0 <= results["metrics"][dataset]["ndcg@10"] <= 1
    params = results["params"]
    if option in EVALUATION_ONLY:
        assert params["trainable"] == 0 and results["metrics"][dataset] == results["references"]["zero_shot"][dataset]["metrics"]
        return
    assert "ndcg@10" in results["dev_at_start"] and "ndcg@10" in results["dev"]
    assert results["training"]["steps"] == STEPS
    assert 0 < params["trainable"] <= params["total"] and params["adapter_bytes"] > 0
