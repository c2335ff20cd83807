"""kill -9 during training, then the same command again: the job resumes and ends where an uninterrupted
run ends (the same metrics, the same adapter weights up to float32 rounding)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.fault]

# 12 training pairs in batches of 4: three batches per epoch, so the kill (after step 5) lands mid-epoch,
# the resumed run restarts from the step-4 checkpoint mid-epoch and then crosses into a new epoch.
SMALL_JOB = (
    "experiment=smoke", "eval.bm25=false", "eval.zero_shot=false", "data.negatives_source=random",
    "data.max_queries=12", "data.max_documents=60", "trainer.max_steps=7", "training.checkpoint_every_n_steps=2",
)
# Runs the real entry point with a SIGKILL (no cleanup, no atexit) right after the given training step.
KILLED_AT_STEP = """
import os, runpy, signal
from splade_peft.training.module import SpladeModule

def kill(self, outputs, batch, batch_idx):
    if self.global_step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)

SpladeModule.on_train_batch_end = kill
runpy.run_module("splade_peft", run_name="__main__", alter_sys=True)
"""


def run_small_job(run_dir: Path, *, kill_at_step: int | None = None) -> subprocess.CompletedProcess:
    entry = None if kill_at_step is None else ["-c", KILLED_AT_STEP.format(step=kill_at_step)]
    return run_cli(run_dir, *SMALL_JOB, entry=entry, timeout=300)


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    reference = run_small_job(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = run_small_job(tmp_path / "resumed", kill_at_step=5)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["status"] == "running"

    resumed = run_small_job(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming training from" in resumed.stdout + resumed.stderr

    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    got = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert got["status"] == "completed"
    assert got["training"]["steps"] == expected["training"]["steps"] == 7
    assert got["metrics"] == expected["metrics"]
    # Same batches, negatives and dropout masks: the weights agree to float32 rounding (about 1e-7 relative;
    # a wrong batch or mask would move them by orders of magnitude more).
    reference_weights, resumed_weights = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors")
                                          for run in ("reference", "resumed"))
    assert reference_weights.keys() == resumed_weights.keys()
    for name, weight in reference_weights.items():
        torch.testing.assert_close(resumed_weights[name], weight, rtol=1e-5, atol=1e-9)


def test_checkpoints_carry_the_gpu_generator_where_there_is_one(monkeypatch):
    """On a GPU, dropout masks come from the device's generator: a resume that restored only the CPU ones would
    draw different masks from the uninterrupted run. Proved with a stand-in device (this machine has none)."""
    from splade_peft.training import resume

    device_state = {"now": torch.tensor([7], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: device_state["now"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: device_state.update(now=state))
    saved = resume.rng_states()
    device_state["now"] = torch.tensor([9], dtype=torch.uint8)  # the run went on drawing
    resume.restore_rng_states(saved)
    assert torch.equal(device_state["now"], torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in resume.rng_states()
