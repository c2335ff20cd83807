"""`make gpu-check` (bench/gpu_check.py): without CUDA it stops in one line; a failing section is recorded and the
others still run; the plan's FLOP count is the code's; and `--allow-cpu --tiny` runs every section end to end on
the CPU, the guard against a script that would first fail on scarce GPU time."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig

import bench.gpu_check as gpu_check
from tests.helpers import REPO

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")


def run_check(*arguments: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@no_cuda
def test_without_cuda_it_stops_in_one_line_and_writes_nothing(tmp_path):
    check = run_check("--out", str(tmp_path / "gpu.json"))
    assert check.returncode != 0 and check.stdout == ""
    assert check.stderr.startswith("gpu-check: no CUDA device visible") and check.stderr.count("\n") == 1, check.stderr
    assert not (tmp_path / "gpu.json").exists()


@no_cuda
def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(sizes, device, scratch, budget):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    def fine(sizes, device, scratch, budget):
        return {"figure": 1.5}

    monkeypatch.setattr(gpu_check, "SECTIONS", {"broken": broken, "fine": fine})
    assert gpu_check.main(["--allow-cpu", "--tiny", "--out", str(tmp_path / "gpu.json")]) == 0
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["broken"]["error"].startswith("out of memory (OutOfMemoryError: CUDA out of memory.")
    assert written["fine"]["figure"] == 1.5
    assert written["device"] == "cpu" and written["versions"]["torch"] == torch.__version__


def test_the_training_step_flops_are_the_plans():
    # bench/gpu_plan.md: 68.2 TFLOP per step for BERT-base, LoRA r32, 32 queries x 17 documents, lengths 32 and 256
    step = gpu_check.plan_step_flops(BertConfig(**gpu_check.GPU.bert), 32, 32, 32, 32 * 17, 256)
    assert step / 1e12 == pytest.approx(68.25, abs=0.01)  # the page rounds it to 68.2


@pytest.mark.slow
@no_cuda
def test_every_section_runs_at_tiny_sizes_on_the_cpu(tmp_path):
    check = run_check("--allow-cpu", "--tiny", "--out", str(tmp_path / "gpu.json"), timeout=400)
    assert check.returncode == 0, check.stderr[-3000:]
    written = json.loads((tmp_path / "gpu.json").read_text())
    errors = {name: written[name].get("error") for name in gpu_check.SECTIONS if written[name].get("error")}
    assert not errors, errors
    for precision in ("fp32", "bf16"):
        row = written["projection"][precision]
        assert row["masked_max_s"] > 0 and row["autograd_s"] > 0 and row["max_abs_diff_values"] < 1e-2
    assert written["projection"]["fp32"]["max_abs_diff_grad_hidden"] < 1e-5
    assert written["lora_step"]["tflop_per_s"] > 0 and written["lora_step"]["trained_parameters"] > 0
    encoding = written["encoding"]
    assert encoding["pipeline_docs_per_s"] > 0 and encoding["forward_only_docs_per_s"] > 0
    assert written["sharded"]["identical"] and written["sharded"]["shards"] == 2
    assert written["job"]["steps"] == gpu_check.TINY.job_steps and written["job"]["kept"]["step"] >= 1
    assert written["qlora"]["steps"] >= 1 and len(written["qlora"]["backbone_check"]["answers"]) == 3
    assert written["ddp"]["backend"] == "gloo" and written["ddp"]["processes"] == 1
