"""A job submitit preempts resumes from the step it reached: the real path, through the project's local submitit
launcher (the signal, submitit's own handler, the checkpoint, the requeue, the job run again in its folder)."""

import json

import pytest

from tests.helpers import submitit_sweep_with_plugin

# A plugin module (the root key `plugins`), imported in the job: at step 3 of the first run the job sends itself the
# signal a cluster sends before preempting it (submitit's USR2), as SLURM would.
PREEMPT_AT_STEP_3 = """
import os, signal
from pathlib import Path
import splade_peft.training.module as module_code

marker = Path(os.environ["PREEMPTED_MARKER"])
step = module_code.SpladeModule.training_step

def training_step(self, batch, batch_index):
    if self.global_step == 3 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGUSR2)
    return step(self, batch, batch_index)

module_code.SpladeModule.training_step = training_step
"""


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_from_the_step_it_reached(tmp_path):
    completed, sweep_dir = submitit_sweep_with_plugin(
        tmp_path, "preempt_at_step_3", PREEMPT_AT_STEP_3, "seed=1", "experiment=smoke", "eval.bm25=false",
        "eval.zero_shot=false", "data.negatives_source=random", "data.max_queries=8", "data.max_documents=40",
        "trainer.max_steps=6", "training.checkpoint_every_n_steps=100", env={"PREEMPTED_MARKER": str(tmp_path / "preempted")})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "preempted").exists()  # the signal was sent
    [result_file] = sweep_dir.glob("*seed=1*/results.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "completed" and result["training"]["steps"] == 6
    assert result["training"]["resumed_from_step"] == 4  # the signalled step was finished and checkpointed
