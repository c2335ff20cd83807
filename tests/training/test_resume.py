"""kill -9 during training, then the same command again: the job resumes and ends where an uninterrupted
run ends (the same metrics, the same adapter weights up to float32 rounding). A job signalled to requeue
(submitit's preemption and timeout signal) checkpoints the step it reached first."""

import json
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from splade_peft.training.preemption import CheckpointOnPreemption, cluster_plugins, requeue_signal
from splade_peft.training.resume import CHECKPOINT_NAME, ResumeState, StagedCheckpointIO
from tests.helpers import run_cli

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


@pytest.mark.slow
@pytest.mark.fault
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


@pytest.mark.slow
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


# --- the requeue signal ----------------------------------------------------------------------------------------

class Regression(L.LightningModule):
    """A linear fit that sends its own process the requeue signal during one training step, as SLURM would."""

    def __init__(self, signal_at_step: int | None = None):
        super().__init__()
        self.layer, self.signal_at_step = torch.nn.Linear(4, 1), signal_at_step

    def training_step(self, batch, batch_idx):
        if self.global_step == self.signal_at_step:
            signal.raise_signal(requeue_signal())
        features, target = batch
        return torch.nn.functional.mse_loss(self.layer(features), target)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def regression_fit(folder: Path, module: Regression, *callbacks, ckpt_path=None) -> L.Trainer:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=4)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[StagedCheckpointIO()],
                        callbacks=[*callbacks, CheckpointOnPreemption(folder / CHECKPOINT_NAME)])
    trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer


class Requeue(Exception):
    """What the stand-in for submitit's handler raises (submitit's own exits the process)."""


@pytest.fixture
def submitit_handler():
    """A handler on the requeue signal, as submitit installs in a job it runs: it records each call, then requeues."""
    calls = []

    def requeue(signum, frame):
        calls.append(signum)
        raise Requeue

    previous = signal.signal(requeue_signal(), requeue)
    yield calls, requeue
    signal.signal(requeue_signal(), previous)


def test_the_requeue_signal_checkpoints_the_step_in_flight_before_submitit_requeues(tmp_path, submitit_handler):
    calls, requeue = submitit_handler
    with pytest.raises(Requeue):
        regression_fit(tmp_path, Regression(signal_at_step=2), ResumeState(None, 4))
    assert calls == [requeue_signal()]  # submitit's handler got the signal, once, after the checkpoint
    assert signal.getsignal(requeue_signal()) is requeue
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["global_step"] == 3  # the signalled step done

    resumed = ResumeState(None, 4)
    trainer = regression_fit(tmp_path, Regression(), resumed, ckpt_path=tmp_path / CHECKPOINT_NAME)
    assert resumed.resumed_from_step == 3 and trainer.global_step == 6
    assert signal.getsignal(requeue_signal()) is requeue and calls == [requeue_signal()]


def test_without_a_handler_on_the_signal_training_leaves_it_alone(tmp_path):
    seen = []

    class Look(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.append(signal.getsignal(requeue_signal()))

    regression_fit(tmp_path, Regression(), Look())
    assert set(seen) == {signal.SIG_DFL} and not (tmp_path / CHECKPOINT_NAME).exists()


def test_under_submitit_on_slurm_lightning_leaves_the_requeue_to_submitit(tmp_path, monkeypatch):
    """Lightning's SLURM environment would install its own requeue (on SIGUSR1, calling scontrol) beside
    submitit's: a job requeued twice, or by the owner that does not resubmit the Hydra job."""
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7",
                        "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(name, value)
    plugins = cluster_plugins()
    assert len(plugins) == 1 and plugins[0].auto_requeue is False
    seen = []

    class Look(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(signal.getsignal(signal.SIGUSR1))

    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, plugins=plugins, callbacks=[Look()])
    trainer.fit(Regression(), loader)
    assert seen == [signal.SIG_DFL]
